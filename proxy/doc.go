// Package proxy is the sidecar: the traffic redirection that trellis-init
// writes into a pod's network namespace, and the proxy that trellis-proxy
// runs on the redirected ports with its admin endpoint.
//
// The parts are subpackages with one job each, composed once by cmd/proxy:
//
//	redirect  the nftables rules of proxy init, as a plan and its netlink apply
//	forward   the outbound and inbound TCP forwarders (SO_ORIGINAL_DST, splice)
//	admin     /ready, /live, /metrics, /shutdown and the app probe relay
//	appprobe  the app's original probes, run as the kubelet would run them
//
// mTLS, discovery and routing will be more layers between a forwarder's
// accept and its dial; nothing here talks to the control plane yet.
package proxy
