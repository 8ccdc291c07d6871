// Command pause holds a pod sandbox's namespaces: it waits for SIGINT or
// SIGTERM and exits 0, as the Kubernetes pause image does.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	<-signals
}
