// Command pause is a pod sandbox's first process: it holds the pod's
// namespaces open while the pod's containers come and go, and, as PID 1 of a
// pod that shares its process namespace, reaps the zombies that the kernel
// reparents to it. It exits 0 on SIGINT or SIGTERM, which is how the runtime
// stops a sandbox.
//
// It does what Kubernetes's pause.c does, as a static Go binary the project
// builds itself: the machines that run Trellis's local cluster cannot pull
// registry.k8s.io/pause.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, so orphaned processes are reaped by someone else")
	}
	// Buffered so that signals arriving while we reap are not dropped; one
	// SIGCHLD may stand for many exits, which reap handles.
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		os.Exit(0)
	}
}

// reap collects every child that has exited, without blocking on those that
// have not.
func reap() {
	for {
		var status syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return // no exited child left (0), or no child at all (ECHILD)
		}
	}
}
