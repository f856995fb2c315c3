// Command pause is the sandbox container of the local node's pods (hack/node.sh): it holds the pod's
// namespaces, reaps orphans that end up as its children, and exits on SIGINT or SIGTERM. It is the
// project's own stand-in for registry.k8s.io/pause, which this machine cannot pull.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			var status syscall.WaitStatus
			if pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 || err != nil {
				break
			}
		}
	}
}
