// vcsim for vmshield's tests: VMware's own vCenter simulator (govmomi's simulator package, from
// Debian's golang-github-vmware-govmomi-dev), built offline by tests/vcsim/build.sh.
// It prints the server URL on its first line of output, then serves until SIGTERM or SIGINT.
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	hosts := flag.Int("hosts", 2, "hosts per cluster")
	clusters := flag.Int("clusters", 1, "clusters per datacenter")
	vms := flag.Int("vms", 2, "VMs per host or resource pool")
	user := flag.String("user", "user", "the only user name accepted")
	password := flag.String("password", "pass", "its password")
	flag.Parse()

	model := simulator.VPX()
	model.Cluster = *clusters
	model.ClusterHost = *hosts
	model.Machine = *vms
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim:", err)
		os.Exit(1)
	}
	defer model.Remove()
	// With a listen URL that carries credentials, vcsim refuses every other login.
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(*user, *password)}
	server := model.Service.NewServer()
	defer server.Close()
	fmt.Println(server.URL.String())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
