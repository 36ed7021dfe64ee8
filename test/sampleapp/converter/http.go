package converter

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	converterv1 "github.com/trellis-mesh/trellis/test/sampleapp/converter/v1"
)

// HTTPResponse is the body of a successful GET /convert.
type HTTPResponse struct {
	Celsius float64 `json:"celsius"`
	Value   float64 `json:"value"`
	// Unit is C, F or K.
	Unit string `json:"unit"`
	// Converter is the version that answered, as the temperature API names
	// it in its own answers (and as the load generator counts them).
	Converter string `json:"converter"`
	// ConverterPod is the pod that answered.
	ConverterPod string `json:"converterPod,omitempty"`
}

// HTTPError is the body of every error answer.
type HTTPError struct {
	Error string `json:"error"`
	// Code is the gRPC code the same call over gRPC would end with.
	Code string `json:"code"`
	// Converter is the version that answered.
	Converter string `json:"converter"`
}

var units = map[string]converterv1.Unit{
	"C": converterv1.Unit_UNIT_CELSIUS,
	"F": converterv1.Unit_UNIT_FAHRENHEIT,
	"K": converterv1.Unit_UNIT_KELVIN,
}

// ParseUnit reads a unit query parameter (C, F or K, in either case; C when
// empty), as the temperature API and the converter's HTTP side take it, and
// returns its letter and the converter's unit.
func ParseUnit(s string) (string, converterv1.Unit, error) {
	letter := strings.ToUpper(s)
	if letter == "" {
		letter = "C"
	}
	unit, ok := units[letter]
	if !ok {
		return "", 0, fmt.Errorf("unit %q is not known: want F, C or K", s)
	}
	return letter, unit, nil
}

// HTTPHandler serves the converter over HTTP/1.1 as well as gRPC, so that
// the mesh's HTTPRoute features (splits, header matches, retries on status
// codes, timeouts) can be shown on it:
//
//	GET /convert?celsius=21.5&unit=F   the conversion, as JSON
//	GET /healthz                       200 while serving
//
// It shares s's request count, FailPercent and Delay: a failing request is
// answered 503, one whose client gave up during the Delay 504.
func (s *Server) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /convert", s.convertHTTP)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "converter": s.cfg.Version})
	})
	return mux
}

func (s *Server) convertHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	fail := func(code int, grpcCode codes.Code, format string, args ...any) {
		writeJSON(w, code, HTTPError{Error: fmt.Sprintf(format, args...), Code: grpcCode.String(), Converter: s.cfg.Version})
	}
	celsius, err := strconv.ParseFloat(q.Get("celsius"), 64)
	if err != nil {
		fail(http.StatusBadRequest, codes.InvalidArgument, "celsius %q is not a number: ask for /convert?celsius=21.5&unit=F", q.Get("celsius"))
		return
	}
	unitName, unit, err := ParseUnit(q.Get("unit"))
	if err != nil {
		fail(http.StatusBadRequest, codes.InvalidArgument, "%v", err)
		return
	}
	resp, err := s.convert(r.Context(), &converterv1.ConvertRequest{Celsius: celsius, Unit: unit})
	if err != nil {
		st := status.Convert(err)
		code := http.StatusInternalServerError
		switch st.Code() {
		case codes.InvalidArgument:
			code = http.StatusBadRequest
		case codes.Unavailable:
			code = http.StatusServiceUnavailable
		case codes.DeadlineExceeded, codes.Canceled:
			code = http.StatusGatewayTimeout
		}
		fail(code, st.Code(), "%s", st.Message())
		return
	}
	writeJSON(w, http.StatusOK, HTTPResponse{
		Celsius: celsius, Value: resp.GetValue(), Unit: unitName,
		Converter: resp.GetVersion(), ConverterPod: resp.GetPod(),
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
