// Command coredns is CoreDNS with only the plugins the node's Corefile uses
// (testenv/src/node/coredns.yaml: errors, ready, kubernetes, cache), which
// builds in about half the packages of the full plugin set. Add a plugin here
// before the Corefile names it.
package main

import (
	_ "github.com/coredns/coredns/core/dnsserver" // The DNS server type; its directive order is CoreDNS's own.
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func main() {
	coremain.Run()
}
