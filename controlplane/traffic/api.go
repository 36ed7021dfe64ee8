package traffic

import "time"

// The JSON of the control plane's read-only traffic API, served on its HTTP
// port (--http-addr, :15014) next to /metrics. trellisctl and the web page
// decode these types; they change only by adding fields.
//
//	GET /api/v1/stat?namespace=NS&by=workload|service|route&window=1m → StatResponse
//	GET /api/v1/edges?namespace=NS&window=1m                        → EdgesResponse
//	GET /api/v1/top?namespace=NS&window=1m                          → TopResponse
//	GET /api/v1/proxies?namespace=NS                                → []ProxyStatus
//
// namespace is optional everywhere (empty: all namespaces). window is a Go
// duration between MinWindow and MaxWindow, rounded up to a whole number of
// buckets (BucketWidth); DefaultWindow when absent. A bad parameter is
// answered 400 with an ErrorResponse.
//
// scope=mesh (the default) answers for the whole mesh: each proxy reports
// to the one replica it is connected to, so the replica asked asks every
// other ready replica of its Mesh for its scope=local answer, within
// PeerTimeout, and adds them up exactly (counts, bytes, and histograms
// bucket by bucket, the percentiles read from the sum). An answer missing
// a replica says so: partial and message in the JSON, and the
// HeaderPartial header (the only place for /api/v1/proxies, a JSON
// array). scope=local answers for this replica's proxies only.

// Paths of the API.
const (
	PathStat    = "/api/v1/stat"
	PathEdges   = "/api/v1/edges"
	PathTop     = "/api/v1/top"
	PathProxies = "/api/v1/proxies"
)

// Values of the scope parameter.
const (
	ScopeMesh  = "mesh"
	ScopeLocal = "local"
)

// HeaderPartial is set on a scope=mesh answer that misses a replica, to
// the answer's message.
const HeaderPartial = "Trellis-Partial"

// Window bounds of the API: the store keeps MaxWindow of BucketWidth buckets.
const (
	BucketWidth   = 10 * time.Second
	MinWindow     = BucketWidth
	MaxWindow     = 5 * time.Minute
	DefaultWindow = time.Minute
)

// Values of StatRow.Kind and of the stat query's by parameter.
const (
	KindWorkload = "workload"
	KindService  = "service"
	KindRoute    = "route"
)

// StatResponse is the answer of GET /api/v1/stat.
type StatResponse struct {
	// window is the span the numbers cover, as Go prints a duration ("1m0s").
	Window string `json:"window"`
	// rows are sorted by namespace, then name.
	Rows []StatRow `json:"rows"`
	Coverage
}

// Coverage says whose proxies an answer covers.
type Coverage struct {
	// replicas are the control plane replicas (pod names) that took part
	// in the answer, this one first, and whether each answered.
	Replicas []ReplicaAnswer `json:"replicas,omitempty"`
	// partial is true when a replica did not answer: the traffic of the
	// proxies connected to it is missing from the numbers.
	Partial bool `json:"partial,omitempty"`
	// message says, when partial, which replicas did not answer and why.
	Message string `json:"message,omitempty"`
}

// ReplicaAnswer is one replica's part in an answer.
type ReplicaAnswer struct {
	// name is the replica's pod name.
	Name     string `json:"name"`
	Answered bool   `json:"answered"`
	// error says why it did not answer.
	Error string `json:"error,omitempty"`
}

// StatRow is the traffic of one workload, Service or route over the window.
//
// Whose view counts: a workload's row is what its own pods' proxies served
// (inbound: every caller, meshed or not); a Service's and a route's row is
// what the meshed callers' proxies sent to it (outbound: only the client
// side knows the Service and route a request was for).
type StatRow struct {
	// kind is workload, service or route.
	Kind string `json:"kind"`
	// namespace and name name the workload (its Deployment, StatefulSet,
	// DaemonSet, or the pod itself when it has no such owner), the Service,
	// or the route (HTTPRoute or GRPCRoute name).
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// workloadKind is Deployment, StatefulSet, DaemonSet, Job, ... or Pod;
	// set for kind workload.
	WorkloadKind string `json:"workloadKind,omitempty"`
	// meshedPods is, for a workload, how many of its pods' proxies reported
	// within the window; for a Service or route, how many distinct
	// destination pods answered its requests.
	MeshedPods int `json:"meshedPods"`
	// requests is how many HTTP and gRPC requests ended in the window.
	Requests uint64 `json:"requests"`
	// rps is requests divided by the window's seconds.
	RPS float64 `json:"rps"`
	// successRate is the share (0 to 1) of requests that succeeded: not 5xx
	// for HTTP, and for gRPC not UNKNOWN, DEADLINE_EXCEEDED, INTERNAL or
	// UNAVAILABLE. Absent when there were no requests.
	SuccessRate *float64 `json:"successRate,omitempty"`
	// latencyMs are percentiles of the requests' durations, from their
	// arrival at the proxy to their response's end; absent without requests.
	LatencyMs *Latency `json:"latencyMs,omitempty"`
	// latencyHistogram is the requests by duration that latencyMs is read
	// from; absent without requests. Replicas add them up bucket by bucket.
	LatencyHistogram *LatencyHistogram `json:"latencyHistogram,omitempty"`
	// bytesIn is the bytes of request bodies and bytesOut those of response
	// bodies, seen from the row's side (the server's for a workload).
	BytesIn  uint64 `json:"bytesIn"`
	BytesOut uint64 `json:"bytesOut"`
	// tcpConnections is how many opaque TCP connections were relayed
	// (not counted in requests).
	TCPConnections uint64 `json:"tcpConnections"`
}

// Latency are percentiles in milliseconds, read from the proxies'
// log-linear histogram (package latency): within 4.3% of the true
// percentile for requests between 0.1 ms and 60 s; a percentile beyond
// 60 s is 60 s.
type Latency struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// LatencyHistogram is a histogram of request durations: its buckets that
// hold requests. The buckets are the proxies' (package latency, 8 a
// doubling): a bucket holds the durations above the bound before its own
// in latency.BoundsMs, up to its own.
type LatencyHistogram struct {
	// boundsMs are the upper bounds of the buckets that hold requests, in
	// milliseconds, increasing: values of latency.BoundsMs.
	BoundsMs []float64 `json:"boundsMs"`
	// counts are the requests of each of those buckets. They may be
	// fractional: a report that spans two 10 s buckets of the store is
	// shared between them by time.
	Counts []float64 `json:"counts"`
	// overflow is the requests longer than the last bound (60 s).
	Overflow float64 `json:"overflow,omitempty"`
}

// EdgesResponse is the answer of GET /api/v1/edges: who calls whom.
type EdgesResponse struct {
	Window string `json:"window"`
	// edges are sorted by source, then destination.
	Edges []Edge `json:"edges"`
	Coverage
}

// Edge is the traffic from one workload to another over the window. It is
// the client's proxy's view when the client is meshed, else the server's
// (a caller outside the mesh: source.workload is empty).
type Edge struct {
	Source      EdgeSource      `json:"source"`
	Destination EdgeDestination `json:"destination"`
	Requests    uint64          `json:"requests"`
	RPS         float64         `json:"rps"`
	SuccessRate *float64        `json:"successRate,omitempty"`
	LatencyMs   *Latency        `json:"latencyMs,omitempty"`
	// latencyHistogram is what latencyMs is read from (StatRow's).
	LatencyHistogram *LatencyHistogram `json:"latencyHistogram,omitempty"`
	// mtls is whether the traffic went in the mesh's mutual TLS. An edge
	// with both is two edges, one per value.
	MTLS           bool   `json:"mtls"`
	BytesIn        uint64 `json:"bytesIn"`
	BytesOut       uint64 `json:"bytesOut"`
	TCPConnections uint64 `json:"tcpConnections"`
}

// EdgeSource is the calling side of an edge.
type EdgeSource struct {
	Namespace string `json:"namespace"`
	// workload is the Deployment (StatefulSet, ...) name; empty for a
	// caller outside the mesh.
	Workload string `json:"workload"`
	// identity is the SPIFFE ID the caller's proxy proved; empty outside
	// the mesh.
	Identity string `json:"identity"`
}

// EdgeDestination is the called side of an edge.
type EdgeDestination struct {
	Namespace string `json:"namespace"`
	// workload is empty when the callee is not a pod the control plane
	// knows (outside the cluster, or already gone).
	Workload string `json:"workload"`
	// identity is the SPIFFE ID of the callee's proxy; empty for a callee
	// outside the mesh.
	Identity string `json:"identity"`
	// service is the Service the caller addressed, <name> in namespace;
	// empty when it called a pod directly or was seen from the server's side.
	Service string `json:"service"`
}

// TopResponse is the answer of GET /api/v1/top: the busiest routes. Paths
// are not recorded (that would cost the proxy's hot path a map per path),
// so its rows are routes, requests sent through each, busiest first.
type TopResponse struct {
	Window string    `json:"window"`
	Rows   []StatRow `json:"rows"`
	Coverage
}

// ProxyStatus is one element of GET /api/v1/proxies: a proxy that reported
// to a control plane replica within MaxWindow, or is connected to one.
// With scope=mesh a proxy known to several replicas (it moved) is listed
// once, as the one it is connected to, or reported to last, says.
type ProxyStatus struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// workload is the pod's owner's name (Deployment, StatefulSet, ...).
	Workload     string `json:"workload"`
	WorkloadKind string `json:"workloadKind,omitempty"`
	// identity is the SPIFFE ID of the proxy's certificate.
	Identity string `json:"identity"`
	// version is the proxy's build version.
	Version string `json:"version"`
	// certNotAfter is when the proxy's current certificate expires.
	CertNotAfter time.Time `json:"certNotAfter"`
	// lastConfigAt is when the proxy last received a discovery answer on
	// any of its streams (config freshness); absent when it has had none.
	LastConfigAt *time.Time `json:"lastConfigAt,omitempty"`
	// streams is how many discovery streams the proxy holds.
	Streams int `json:"streams"`
	// lastReportAt is when its last report arrived.
	LastReportAt time.Time `json:"lastReportAt"`
	// connected is whether its report stream is open now.
	Connected bool `json:"connected"`
	// droppedReports is how many reports the proxy could not send (the
	// control plane was away) and dropped, since it started.
	DroppedReports uint64 `json:"droppedReports"`
}

// ErrorResponse is the body of a 4xx or 5xx answer.
type ErrorResponse struct {
	Error string `json:"error"`
}
