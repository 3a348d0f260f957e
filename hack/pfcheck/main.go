// A real port-forward client for vk_fargate/kubelet/portforward.py: client-go's
// PortForwarder over its SPDY-over-WebSocket tunneling dialer, as kubectl 1.36 uses it.
// Usage: pfcheck URL REMOTE_PORT... ; it forwards a free local port to each remote
// port, prints them as one JSON line ({"REMOTE": LOCAL}) once ready, and stops when its
// standard input is closed. Built and run by tests/unit/kubelet/test_portforward.py.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pfcheck:", err)
		os.Exit(1)
	}
}

func run() error {
	target, err := url.Parse(os.Args[1])
	if err != nil {
		return err
	}
	config := &rest.Config{Host: target.Scheme + "://" + target.Host}
	dialer, err := portforward.NewSPDYOverWebsocketDialer(target, config)
	if err != nil {
		return err
	}
	ports := make([]string, 0, len(os.Args)-2)
	for _, remote := range os.Args[2:] {
		ports = append(ports, "0:"+remote)
	}
	stop, ready := make(chan struct{}), make(chan struct{})
	forwarder, err := portforward.NewOnAddresses(
		dialer, []string{"127.0.0.1"}, ports, stop, ready, os.Stderr, os.Stderr)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- forwarder.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-done:
		return err
	}
	forwarded, err := forwarder.GetPorts()
	if err != nil {
		return err
	}
	local := map[string]uint16{}
	for _, p := range forwarded {
		local[strconv.Itoa(int(p.Remote))] = p.Local
	}
	if err := json.NewEncoder(os.Stdout).Encode(local); err != nil {
		return err
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	return <-done
}
