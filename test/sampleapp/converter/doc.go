// Package converter is the sample app's gRPC converter service: it turns a
// temperature in degrees Celsius into Celsius, Fahrenheit or Kelvin, and can
// be told to fail a share of its requests or to answer slowly, so the mesh's
// end-to-end tests can exercise retries, timeouts and canary splits.
//
// It knows nothing of the mesh and must not: the mesh works with no change to
// application code.
package converter
