// Command statscheck reads one kubelet stats/v1alpha1 Summary as JSON on stdin and
// decodes it into the real Go type with unknown fields disallowed. A field the type
// does not have, a value of the wrong type (a string for a number, a negative number
// for an unsigned one, a malformed time) or trailing data fails with exit code 1 and
// the reason on stderr. On success it writes the Summary as the Go type marshals it
// back, so a caller can compare the round trip with what it sent.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	statsv1alpha1 "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("read stdin: %v", err)
	}
	decoder := json.NewDecoder(bytes.NewReader(input))
	decoder.DisallowUnknownFields()
	var summary statsv1alpha1.Summary
	if err := decoder.Decode(&summary); err != nil {
		fail("decode Summary: %v", err)
	}
	if decoder.More() {
		fail("trailing data after the Summary")
	}
	output, err := json.Marshal(&summary)
	if err != nil {
		fail("encode Summary: %v", err)
	}
	os.Stdout.Write(output)
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "statscheck: "+format+"\n", args...)
	os.Exit(1)
}
