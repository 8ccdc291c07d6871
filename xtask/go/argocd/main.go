// Command argocd is Argo CD's multi-call binary with only the components the
// tests run: the repo server, the application controller, and the git askpass
// helper the repo server calls for HTTPS credentials (it runs this binary with
// ARGOCD_BINARY_NAME=argocd-git-ask-pass). It dispatches on the same names as
// github.com/argoproj/argo-cd/v3/cmd, whose other components (the API server,
// the CLI, Dex, notifications, ApplicationSets) are left out of the build: they
// took a quarter of its packages.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	gitaskpass "github.com/argoproj/argo-cd/v3/cmd/argocd-git-ask-pass/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/util/log"
)

func init() {
	// As Argo CD's own main: klog uses the configured log level and format.
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))
}

func main() {
	name := filepath.Base(os.Args[0])
	if value := os.Getenv("ARGOCD_BINARY_NAME"); value != "" {
		name = value
	}
	var command *cobra.Command
	switch name {
	case common.CommandApplicationController:
		command = appcontroller.NewCommand()
	case common.CommandRepoServer:
		command = reposerver.NewCommand()
	case common.CommandGitAskPass:
		command = gitaskpass.NewCommand()
		command.SilenceErrors = true
		command.SilenceUsage = true
	default:
		fmt.Fprintf(os.Stderr, "argocd: this build runs only as %s, %s or %s (by its file name or ARGOCD_BINARY_NAME), not as %q\n",
			common.CommandRepoServer, common.CommandApplicationController, common.CommandGitAskPass, name)
		os.Exit(2)
	}
	if err := command.Execute(); err != nil {
		os.Exit(1)
	}
}
