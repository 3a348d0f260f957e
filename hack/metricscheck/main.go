// metricscheck scrapes one node's /metrics/resource exactly as metrics-server does and
// prints what metrics-server makes of it. Built and run by
// tests/provider/test_metrics_server_decoder.py.
//
// Nothing of metrics-server is copied here: the flags are metrics-server's own
// (options.KubeletClientOptions: --kubelet-insecure-tls, --kubelet-use-node-status-port,
// --kubelet-preferred-address-types, --kubelet-client-certificate, --kubelet-client-key,
// --kubelet-request-timeout, ...), turned into its client.KubeletClientConfig by its own
// Config method; the scrape and the decoding are its resource.NewForConfig(...).GetMetrics
// (the URL from the node's addresses and daemonEndpoints, the HTTP request, the Prometheus
// text parsing, and the dropping of incomplete node and container points). With
// --scrapes=2 or more, the batches also go through metrics-server's storage
// (storage.NewStorage(...).Store), and the node and pod usage it would serve on the
// Metrics API (what `kubectl top` shows) is printed too.
//
// Usage:
//
//	metricscheck --node=node.json (or - for stdin) --kubelet-insecure-tls \
//	    --kubelet-use-node-status-port --kubelet-preferred-address-types=Hostname \
//	    --kubelet-client-certificate=admin.crt --kubelet-client-key=admin.key \
//	    [--scrapes=1] [--interval=2s] [--metric-resolution=60s] [-v=1]
//
// stdout is one JSON object: {"batches": [batch, ...], "nodeMetrics": [...], "podMetrics":
// [...]} where a batch is {"nodes": {name: point}, "pods": [{"namespace", "name",
// "containers": {name: point}}]} and a point is {"startTime", "timestamp" (RFC 3339 with
// nanoseconds, or null when metrics-server has none), "cumulativeCPUUsed" (core
// nanoseconds), "memoryUsage" (working set bytes)}. A failed scrape exits 1 with the
// error on stderr; klog's messages (-v=1 shows why metrics-server drops a point) go to
// stderr as well.
package main

import (
	"context"
	"encoding/json"
	goflag "flag"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"sigs.k8s.io/metrics-server/cmd/metrics-server/app/options"
	"sigs.k8s.io/metrics-server/pkg/scraper/client/resource"
	"sigs.k8s.io/metrics-server/pkg/storage"
)

type point struct {
	StartTime         *time.Time `json:"startTime"`
	Timestamp         *time.Time `json:"timestamp"`
	CumulativeCPUUsed uint64     `json:"cumulativeCPUUsed"`
	MemoryUsage       uint64     `json:"memoryUsage"`
}

type pod struct {
	Namespace  string           `json:"namespace"`
	Name       string           `json:"name"`
	Containers map[string]point `json:"containers"`
}

type batch struct {
	Nodes map[string]point `json:"nodes"`
	Pods  []pod            `json:"pods"`
}

type usage struct {
	Namespace string            `json:"namespace,omitempty"`
	Name      string            `json:"name"`
	Timestamp time.Time         `json:"timestamp"`
	Window    string            `json:"window"`
	Usage     map[string]string `json:"usage,omitempty"`
	// Containers is set for pods only.
	Containers map[string]map[string]string `json:"containers,omitempty"`
}

type output struct {
	Batches     []batch `json:"batches"`
	NodeMetrics []usage `json:"nodeMetrics,omitempty"`
	PodMetrics  []usage `json:"podMetrics,omitempty"`
}

func when(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func toPoint(p storage.MetricsPoint) point {
	return point{when(p.StartTime), when(p.Timestamp), p.CumulativeCPUUsed, p.MemoryUsage}
}

func toBatch(b *storage.MetricsBatch) batch {
	out := batch{Nodes: map[string]point{}, Pods: []pod{}}
	for name, p := range b.Nodes {
		out.Nodes[name] = toPoint(p)
	}
	for ref, pm := range b.Pods {
		containers := map[string]point{}
		for name, p := range pm.Containers {
			containers[name] = toPoint(p)
		}
		out.Pods = append(out.Pods, pod{ref.Namespace, ref.Name, containers})
	}
	sort.Slice(out.Pods, func(i, j int) bool {
		a, b := out.Pods[i], out.Pods[j]
		return a.Namespace < b.Namespace || (a.Namespace == b.Namespace && a.Name < b.Name)
	})
	return out
}

func quantities(list corev1.ResourceList) map[string]string {
	out := map[string]string{}
	for name, q := range list {
		out[string(name)] = q.String()
	}
	return out
}

func readNode(path string) (*corev1.Node, error) {
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(os.Stdin)
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	node := &corev1.Node{}
	if err := json.Unmarshal(data, node); err != nil {
		return nil, fmt.Errorf("the node is not a Node: %w", err)
	}
	if node.Name == "" {
		return nil, fmt.Errorf("the node has no name")
	}
	return node, nil
}

func run() error {
	kubelet := options.NewKubeletClientOptions()
	fs := pflag.NewFlagSet("metricscheck", pflag.ContinueOnError)
	kubelet.AddFlags(fs)
	nodePath := fs.String("node", "-", "the Node as JSON: a file, or - for stdin")
	scrapes := fs.Int("scrapes", 1, "how many times to scrape the node")
	interval := fs.Duration("interval", 2*time.Second, "the time between two scrapes")
	resolution := fs.Duration("metric-resolution", 60*time.Second,
		"metrics-server's --metric-resolution, for its storage")
	klogFlags := goflag.NewFlagSet("klog", goflag.ContinueOnError)
	klog.InitFlags(klogFlags)
	fs.AddGoFlagSet(klogFlags)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if errs := kubelet.Validate(); len(errs) > 0 {
		return fmt.Errorf("invalid kubelet client options: %v", errs)
	}
	if *scrapes < 1 {
		return fmt.Errorf("--scrapes must be at least 1")
	}
	node, err := readNode(*nodePath)
	if err != nil {
		return err
	}

	// metrics-server's rest config comes from a kubeconfig or the cluster; only its TLS
	// and timeout matter to the kubelet client, and the kubelet flags set those.
	config := kubelet.Config(&rest.Config{})
	kubeletClient, err := resource.NewForConfig(config)
	if err != nil {
		return err
	}
	store := storage.NewStorage(*resolution)
	out := output{Batches: []batch{}}
	for i := 0; i < *scrapes; i++ {
		if i > 0 {
			time.Sleep(*interval)
		}
		// The per-node scrape timeout metrics-server's scraper puts on each request.
		ctx, cancel := context.WithTimeout(context.Background(), kubelet.KubeletRequestTimeout)
		got, err := kubeletClient.GetMetrics(ctx, node)
		cancel()
		if err != nil {
			return fmt.Errorf("scrape %d of node %s: %w", i+1, node.Name, err)
		}
		out.Batches = append(out.Batches, toBatch(got))
		store.Store(got)
	}

	if *scrapes > 1 {
		nodeMetrics, err := store.GetNodeMetrics(node)
		if err != nil {
			return err
		}
		out.NodeMetrics = []usage{}
		for _, m := range nodeMetrics {
			out.NodeMetrics = append(out.NodeMetrics, usage{
				Name: m.Name, Timestamp: m.Timestamp.Time, Window: m.Window.Duration.String(),
				Usage: quantities(m.Usage),
			})
		}
		var pods []*metav1.PartialObjectMetadata
		for _, p := range out.Batches[len(out.Batches)-1].Pods {
			pods = append(pods, &metav1.PartialObjectMetadata{
				ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name},
			})
		}
		podMetrics, err := store.GetPodMetrics(pods...)
		if err != nil {
			return err
		}
		out.PodMetrics = []usage{}
		for _, m := range podMetrics {
			containers := map[string]map[string]string{}
			for _, c := range m.Containers {
				containers[c.Name] = quantities(c.Usage)
			}
			out.PodMetrics = append(out.PodMetrics, usage{
				Namespace: m.Namespace, Name: m.Name, Timestamp: m.Timestamp.Time,
				Window: m.Window.Duration.String(), Containers: containers,
			})
		}
	}

	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	return encoder.Encode(out)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "metricscheck:", err)
		klog.Flush()
		os.Exit(1)
	}
	klog.Flush()
}
