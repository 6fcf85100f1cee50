// Command pause is the pod sandbox's first process for the test node: it holds the pod's
// namespaces, reaps the orphans handed to it, and exits 0 on SIGTERM or SIGINT.
//
// No image can be pulled here, so the node's pause image is this program alone, built
// static and put in an image from scratch (tests/node/images.py).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for received := range signals {
		if received != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every child that has exited; a zombie would hold its pid forever.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
