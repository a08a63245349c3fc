// vcsim serves the govmomi vCenter simulator for vicflow's tests.
//
// It prints three lines on stdout, then serves until SIGTERM/SIGINT:
//
//	VCSIM_URL=https://127.0.0.1:PORT/sdk
//	VCSIM_THUMBPRINT=AB:CD:...   (empty without TLS)
//	VCSIM_READY
package main

import (
	"crypto/sha1"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func thumbprint(der []byte) string {
	sum := sha1.Sum(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback only)")
	useTLS := flag.Bool("tls", true, "serve HTTPS with the simulator's built-in certificate")
	user := flag.String("username", "vicflow", "login user")
	pass := flag.String("password", "vicflow", "login password")
	dc := flag.Int("dc", 1, "datacenters")
	clusters := flag.Int("cluster", 1, "clusters per datacenter")
	hosts := flag.Int("host", 3, "hosts per cluster")
	standalone := flag.Int("standalone-host", 1, "standalone hosts per datacenter")
	datastores := flag.Int("ds", 2, "datastores")
	portgroups := flag.Int("pg", 3, "distributed port groups per datacenter")
	pools := flag.Int("pool", 1, "child resource pools per cluster")
	vms := flag.Int("vm", 1, "VMs per resource pool")
	delay := flag.Int("delay", 0, "latency added to every call, in ms")
	flag.Parse()

	model := simulator.VPX()
	model.Datacenter = *dc
	model.Cluster = *clusters
	model.ClusterHost = *hosts
	model.Host = *standalone
	model.Datastore = *datastores
	model.Portgroup = *portgroups
	model.Pool = *pools
	model.Machine = *vms
	model.DelayConfig.Delay = *delay
	if err := model.Create(); err != nil {
		log.Fatalf("vcsim: cannot create the inventory: %v", err)
	}
	defer model.Remove()

	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*user, *pass)}
	if *useTLS {
		model.Service.TLS = new(tls.Config)
	}
	server := model.Service.NewServer()
	defer server.Close()

	sdk := *server.URL
	sdk.User = nil
	print := ""
	if *useTLS {
		print = thumbprint(server.Certificate().Raw)
	}
	fmt.Printf("VCSIM_URL=%s\nVCSIM_THUMBPRINT=%s\nVCSIM_READY\n", sdk.String(), print)
	os.Stdout.Sync()

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
