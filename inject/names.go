package inject

// The names and numbers that an injected pod and its proxy share are in
// package sidecar, which the proxy imports without Kubernetes' packages.

// Names of what the operator writes, copied from package controllers, which
// inject must not import (it pulls in the manager and its clients).
// TestOperatorNames reads controllers/names.go and fails when they, or the
// copies in package sidecar, differ.
const (
	// trustBundleName is controllers.TrustBundleName.
	trustBundleName = "trellis-ca-bundle"
	// controlPlaneName is controllers.ControlPlaneName: its Service.
	controlPlaneName = "trellis-controlplane"
	// controlPlaneGRPCPort is controllers.ControlPlaneGRPCPort.
	controlPlaneGRPCPort = 15012
)

// Defaults of Mesh fields that the CRD fills in. A Mesh read from the API
// server has them; one built in Go (tests, trellisctl) may not.
const (
	defaultMeshNamespace = "trellis-system"
	defaultTrustDomain   = "cluster.local"
	defaultLogLevel      = "info"
	defaultAccessLog     = "Off"
	defaultSampling      = 1
)

// nativeSidecarMinor is the first Kubernetes 1.x where init containers with
// restartPolicy Always (native sidecars) are on by default.
const nativeSidecarMinor = 29
