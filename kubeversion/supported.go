package kubeversion

// The Kubernetes versions Trellis supports, as minor versions of 1.x.
// MinMinor is the OLM bundle's minKubeVersion (config/manifests); the
// operator's native sidecars and the APIs it uses are there from 1.31 on.
// MaxTestedMinor is the version the project builds against and tests on
// (client-go, the Makefile's K8S_VERSION): newer ones are expected to work
// but have not been tried.
const (
	MinMinor       = 31
	MaxTestedMinor = 37
)
