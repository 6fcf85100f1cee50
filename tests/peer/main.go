// The Go peer of the benchmarks (tox -e bench-peer): what the sidecar does, written the way
// a Go controller would, with client-go's SharedInformer. It watches the Service's
// EndpointSlices, applies the sidecar's membership rules (each address once, in its best
// state: ready, then terminating, then not ready; IPv4 before IPv6, numeric order) and writes
// index.txt (byte-identical to the sidecar's), index.json (the membership keys, the same
// values) and a plain index.html, each by temp file and rename. Nothing of it ships.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"html"
	"log"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

type member struct {
	Address string `json:"address"`
	Pod     string `json:"pod"`
	Node    string `json:"node"`
	Zone    string `json:"zone"`
	key     netip.Addr
	rank    int
}

type document struct {
	Service     string            `json:"service"`
	Namespace   string            `json:"namespace"`
	Addresses   []string          `json:"addresses"`
	ServedBy    map[string]string `json:"served_by"`
	Generated   string            `json:"generated_at"`
	Source      string            `json:"source"`
	Stale       *string           `json:"stale_since"`
	Compact     bool              `json:"compact"`
	Changes     []any             `json:"changes"`
	Members     []member          `json:"members"`
	Terminating []member          `json:"terminating"`
	NotReady    []member          `json:"not_ready"`
}

func membership(slices []*discoveryv1.EndpointSlice) [3][]member {
	best := map[string]member{}
	for _, slice := range slices {
		if slice.AddressType != discoveryv1.AddressTypeIPv4 && slice.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		for _, ep := range slice.Endpoints {
			rank := 2
			if ep.Conditions.Ready == nil || *ep.Conditions.Ready {
				rank = 0 // absent means ready (EndpointConditions' contract)
			} else if ep.Conditions.Terminating != nil && *ep.Conditions.Terminating {
				rank = 1
			}
			pod := ""
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" {
				pod = ep.TargetRef.Name
			} else if ep.Hostname != nil {
				pod = *ep.Hostname
			}
			for _, raw := range ep.Addresses {
				addr, err := netip.ParseAddr(raw)
				if err != nil {
					continue
				}
				m := member{Address: addr.String(), Pod: pod, key: addr, rank: rank}
				if ep.NodeName != nil {
					m.Node = *ep.NodeName
				}
				if ep.Zone != nil {
					m.Zone = *ep.Zone
				}
				if seen, ok := best[m.Address]; !ok || rank < seen.rank {
					best[m.Address] = m
				}
			}
		}
	}
	var groups [3][]member
	for _, m := range best {
		groups[m.rank] = append(groups[m.rank], m)
	}
	for _, g := range groups {
		sort.Slice(g, func(i, j int) bool {
			a, b := g[i].key, g[j].key
			if a.Is4() != b.Is4() {
				return a.Is4()
			}
			return a.Less(b)
		})
	}
	for i := range groups {
		if groups[i] == nil {
			groups[i] = []member{}
		}
	}
	return groups
}

func writeAtomic(dir, name string, data []byte) error {
	temp, err := os.CreateTemp(dir, ".peer-"+name+".*.tmp")
	if err != nil {
		return err
	}
	if _, err := temp.Write(data); err != nil {
		temp.Close()
		os.Remove(temp.Name())
		return err
	}
	temp.Chmod(0o644)
	temp.Close()
	return os.Rename(temp.Name(), filepath.Join(dir, name))
}

func publish(dir, service, namespace string, slices []*discoveryv1.EndpointSlice) error {
	groups := membership(slices)
	addresses := make([]string, len(groups[0]))
	var txt, page bytes.Buffer
	page.WriteString("<!doctype html>\n<ol>\n")
	for i, m := range groups[0] {
		addresses[i] = m.Address
		txt.WriteString(m.Address + "\n")
		fmt.Fprintf(&page, "<li><code>%s</code> %s</li>\n", html.EscapeString(m.Address), html.EscapeString(m.Pod))
	}
	page.WriteString("</ol>\n")
	doc := document{
		Service: service, Namespace: namespace, Addresses: addresses,
		ServedBy:  map[string]string{"pod_name": os.Getenv("PODLISTER_POD_NAME"), "pod_ip": os.Getenv("PODLISTER_POD_IP")},
		Generated: time.Now().UTC().Format("2006-01-02T15:04:05.000Z"), Source: "endpointslices",
		Changes: []any{}, Members: groups[0], Terminating: groups[1], NotReady: groups[2],
	}
	encoded, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	// The sidecar's order: index.json, index.txt, then index.html (the one benchmarks wait for).
	for _, file := range []struct {
		name string
		data []byte
	}{{"index.json", append(encoded, '\n')}, {"index.txt", txt.Bytes()}, {"index.html", page.Bytes()}} {
		if err := writeAtomic(dir, file.name, file.data); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	kubeconfig := flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file")
	namespace := flag.String("namespace", "default", "the Service's namespace")
	service := flag.String("service", "", "the Service whose EndpointSlices are watched")
	output := flag.String("output", "", "folder the pages are written to")
	flag.Parse()
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatal(err)
	}
	config.QPS, config.Burst = -1, 0 // no client-side rate limit, as the sidecar has none
	clients := kubernetes.NewForConfigOrDie(config)
	selector := discoveryv1.LabelServiceName + "=" + *service
	factory := informers.NewSharedInformerFactoryWithOptions(clients, 0,
		informers.WithNamespace(*namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = selector }))
	informer := factory.Discovery().V1().EndpointSlices()
	changed := make(chan struct{}, 1)
	notify := func() {
		select {
		case changed <- struct{}{}:
		default: // a write is already due; it will see this change too
		}
	}
	informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { notify() },
		UpdateFunc: func(any, any) { notify() },
		DeleteFunc: func(any) { notify() },
	})
	stop := make(chan struct{})
	factory.Start(stop)
	if !cache.WaitForCacheSync(stop, informer.Informer().HasSynced) {
		log.Fatal("cache never synced")
	}
	notify() // a Service without slices still gets its (empty) page
	for range changed {
		slices, err := informer.Lister().EndpointSlices(*namespace).List(labels.Everything())
		if err != nil {
			log.Print(err)
			continue
		}
		if err := publish(*output, *service, *namespace, slices); err != nil {
			log.Print(err)
		}
	}
}
