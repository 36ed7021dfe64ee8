package temperature

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/trellis-mesh/trellis/test/sampleapp/converter"
	converterv1 "github.com/trellis-mesh/trellis/test/sampleapp/converter/v1"
)

// Cities is the current temperature, in degrees Celsius, of each known city.
var Cities = map[string]float64{
	"Cairo":     24.8,
	"Lisbon":    17.2,
	"Nairobi":   21.4,
	"Oslo":      -3.5,
	"Reykjavik": -1.2,
	"Tokyo":     9.6,
}

// PropagatedHeaders are the request headers forwarded to the converter as
// gRPC metadata: W3C trace context, B3 (single and multi header) and the
// request ID, the set Istio asks applications to forward.
var PropagatedHeaders = []string{
	"traceparent", "tracestate",
	"b3", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags",
	"x-request-id",
}

// Config is how the API behaves.
type Config struct {
	// ConverterTimeout bounds each call to the converter; past it the API
	// answers 504.
	ConverterTimeout time.Duration
	// Pod is the name of the pod, sent back in responses.
	Pod string
}

// Response is the body of a successful GET /temperature.
type Response struct {
	City    string  `json:"city"`
	Celsius float64 `json:"celsius"`
	Value   float64 `json:"value"`
	// Unit is C, F or K.
	Unit string `json:"unit"`
	// Converter is the version of the converter that answered.
	Converter string `json:"converter"`
	// ConverterPod is the pod of the converter that answered.
	ConverterPod string `json:"converterPod,omitempty"`
	// Pod is the API's own pod.
	Pod string `json:"pod"`
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error string `json:"error"`
	// City and KnownCities are set when the city is not known.
	City        string   `json:"city,omitempty"`
	KnownCities []string `json:"knownCities,omitempty"`
	// Code and Message are the converter's gRPC status, when it failed.
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// API serves the temperature API.
type API struct {
	cfg       Config
	converter converterv1.ConverterClient
	logger    *slog.Logger
}

// New returns an API that converts with client, which should share one
// connection between all requests.
func New(cfg Config, client converterv1.ConverterClient, logger *slog.Logger) *API {
	return &API{cfg: cfg, converter: client, logger: logger}
}

// Handler returns the API's routes: GET /temperature, /healthz and /readyz.
//
// /readyz does not depend on the converter: an API that is up but whose
// converter is down answers 502s, which is what the mesh's tests want to see,
// rather than leaving the Service without endpoints.
func (a *API) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /temperature", a.temperature)
	ok := func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	return mux
}

func (a *API) temperature(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("city")
	if name == "" {
		writeJSON(w, http.StatusBadRequest, ErrorResponse{
			Error:       "the city query parameter is missing: ask for /temperature?city=Oslo&unit=F",
			KnownCities: KnownCities(),
		})
		return
	}
	city, celsius, ok := lookup(name)
	if !ok {
		writeJSON(w, http.StatusNotFound, ErrorResponse{
			Error:       fmt.Sprintf("city %q is not known", name),
			City:        name,
			KnownCities: KnownCities(),
		})
		return
	}
	unitName, unit, err := converter.ParseUnit(q.Get("unit"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: err.Error()})
		return
	}

	ctx, cancel := context.WithTimeout(outgoingContext(r), a.cfg.ConverterTimeout)
	defer cancel()
	resp, err := a.converter.Convert(ctx, &converterv1.ConvertRequest{Celsius: celsius, Unit: unit})
	if err != nil {
		st := status.Convert(err)
		code := http.StatusBadGateway
		msg := "the converter failed"
		if st.Code() == codes.DeadlineExceeded {
			code = http.StatusGatewayTimeout
			msg = fmt.Sprintf("the converter did not answer within %s", a.cfg.ConverterTimeout)
		}
		a.logger.Warn("converter call failed", "city", city, "unit", unitName, "code", st.Code().String(), "message", st.Message())
		writeJSON(w, code, ErrorResponse{Error: msg, Code: st.Code().String(), Message: st.Message()})
		return
	}
	writeJSON(w, http.StatusOK, Response{
		City:         city,
		Celsius:      celsius,
		Value:        resp.GetValue(),
		Unit:         unitName,
		Converter:    resp.GetVersion(),
		ConverterPod: resp.GetPod(),
		Pod:          a.cfg.Pod,
	})
}

// outgoingContext is the request's context carrying its tracing headers as
// outgoing gRPC metadata.
func outgoingContext(r *http.Request) context.Context {
	var kv []string
	for _, h := range PropagatedHeaders {
		for _, v := range r.Header.Values(h) {
			kv = append(kv, h, v)
		}
	}
	if len(kv) == 0 {
		return r.Context()
	}
	return metadata.AppendToOutgoingContext(r.Context(), kv...)
}

// lookup finds a city by name, ignoring case, and returns its name as the
// table spells it.
func lookup(name string) (string, float64, bool) {
	for city, c := range Cities {
		if strings.EqualFold(city, name) {
			return city, c, true
		}
	}
	return "", 0, false
}

// KnownCities returns the known cities' names, sorted.
func KnownCities() []string {
	names := make([]string, 0, len(Cities))
	for city := range Cities {
		names = append(names, city)
	}
	slices.Sort(names)
	return names
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// An error here means the client has gone: there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}
