// Package temperature is the sample app's HTTP/1.1 JSON API: it looks up a
// city's temperature in a fixed table and asks the converter, over gRPC, to
// convert it into the unit the caller wants.
//
// It forwards the tracing headers of each request to the converter, as any
// application in a mesh must for traces to join up, and knows nothing else of
// the mesh: mTLS, retries and routing are the mesh's job, so it dials the
// converter in plain text and makes one attempt per request.
package temperature
