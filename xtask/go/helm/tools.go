//go:build tools

// Pins Helm for xtask/go/helm.sh, which builds its command from this module.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
