//go:build tools

// Pins Prometheus for xtask/go/promtool.sh, which builds promtool from this module.
package tools

import _ "github.com/prometheus/prometheus/cmd/promtool"
