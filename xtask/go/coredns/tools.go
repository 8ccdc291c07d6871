//go:build tools

// Package tools pins CoreDNS, the cluster DNS of the tests' node (xtask/go/node.sh).
package tools

import _ "github.com/coredns/coredns"
