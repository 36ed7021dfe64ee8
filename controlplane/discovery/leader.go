package discovery

import (
	"context"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Election names the Lease that the control plane's replicas compete for,
// and this replica.
type Election struct {
	// Namespace and Name of the Lease: the control plane's namespace and,
	// say, trellis-controlplane-<mesh>-status.
	Namespace, Name string
	// Identity is this replica's, such as its pod name.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod default to 15s, 10s and 2s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// RunElected runs run while this replica holds the Lease, and campaigns
// again whenever it loses it, until ctx ends. run's context ends when the
// lease is lost; run must then return. It needs get, create and update on
// leases in the Lease's namespace.
func RunElected(ctx context.Context, cfg *rest.Config, e Election, run func(ctx context.Context)) error {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("leader election client: %w", err)
	}
	if e.LeaseDuration == 0 {
		e.LeaseDuration = 15 * time.Second
	}
	if e.RenewDeadline == 0 {
		e.RenewDeadline = 10 * time.Second
	}
	if e.RetryPeriod == 0 {
		e.RetryPeriod = 2 * time.Second
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("lease", e.Namespace+"/"+e.Name, "identity", e.Identity)
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: &resourcelock.LeaseLock{
				LeaseMeta:  metav1.ObjectMeta{Namespace: e.Namespace, Name: e.Name},
				Client:     cs.CoordinationV1(),
				LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity},
			},
			LeaseDuration:   e.LeaseDuration,
			RenewDeadline:   e.RenewDeadline,
			RetryPeriod:     e.RetryPeriod,
			ReleaseOnCancel: true,
			Name:            e.Name,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("Leading")
					run(ctx)
				},
				OnStoppedLeading: func() { log.Info("No longer leading") },
			},
		})
		if err != nil {
			return fmt.Errorf("leader election for lease %s/%s: %w", e.Namespace, e.Name, err)
		}
		le.Run(ctx)
	}
	return nil
}
