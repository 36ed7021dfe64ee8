package manifests

import "embed"

// FS holds kustomization.yaml and the files it lists.
//
//go:embed *.yaml
var FS embed.FS

// Files are the manifests in the order to apply them: the namespace first.
var Files = []string{"namespace.yaml", "temperature-api.yaml", "converter.yaml"}

// Names of the objects, for tests that wait on them.
const (
	Namespace      = "temperature"
	TemperatureAPI = "temperature-api"
	// Converter is the Service over both converter versions.
	Converter   = "converter"
	ConverterV1 = "converter-v1"
	ConverterV2 = "converter-v2"
)
