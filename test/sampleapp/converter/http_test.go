package converter

import (
	"context"
	"encoding/json"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func getJSON(t *testing.T, ctx context.Context, url string, v any) int {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %d %q: %v", url, resp.StatusCode, body, err)
	}
	return resp.StatusCode
}

func TestHTTPConvert(t *testing.T) {
	srv := httptest.NewServer(NewServer(Config{Version: V2, Pod: "converter-v2-abc"}).HTTPHandler())
	defer srv.Close()
	ctx := context.Background()

	var ok HTTPResponse
	if code := getJSON(t, ctx, srv.URL+"/convert?celsius=-3.5&unit=k", &ok); code != http.StatusOK {
		t.Fatalf("status %d; want 200", code)
	}
	if math.Abs(ok.Value-269.7) > 1e-9 || ok.Unit != "K" || ok.Converter != V2 || ok.ConverterPod != "converter-v2-abc" {
		t.Errorf("got %+v; want 269.7 K from v2 converter-v2-abc", ok)
	}

	for name, url := range map[string]string{
		"no celsius":          "/convert?unit=F",
		"celsius not a value": "/convert?celsius=warm&unit=F",
		"unknown unit":        "/convert?celsius=1&unit=R",
		"below absolute zero": "/convert?celsius=-300&unit=F",
	} {
		t.Run(name, func(t *testing.T) {
			var e HTTPError
			if code := getJSON(t, ctx, srv.URL+url, &e); code != http.StatusBadRequest {
				t.Errorf("status %d; want 400", code)
			}
			if e.Error == "" || e.Code != "InvalidArgument" || e.Converter != V2 {
				t.Errorf("error body %+v: want a message, InvalidArgument and the version", e)
			}
		})
	}
}

// The HTTP side fails and delays as the gRPC side does, over the same count.
func TestHTTPFailPercentAndDelay(t *testing.T) {
	s := NewServer(Config{Version: V1, FailPercent: 50})
	srv := httptest.NewServer(s.HTTPHandler())
	defer srv.Close()
	failures := 0
	for range 100 {
		var e HTTPError
		switch code := getJSON(t, context.Background(), srv.URL+"/convert?celsius=1&unit=F", &e); code {
		case http.StatusOK:
		case http.StatusServiceUnavailable:
			failures++
			if e.Code != "Unavailable" {
				t.Fatalf("503 with %+v; want code Unavailable", e)
			}
		default:
			t.Fatalf("status %d; want 200 or 503", code)
		}
	}
	if failures != 50 {
		t.Errorf("%d of 100 failed; want 50", failures)
	}

	slow := httptest.NewServer(NewServer(Config{Version: V1, Delay: 5 * time.Second}).HTTPHandler())
	defer slow.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	var v HTTPResponse
	if code := getJSON(t, ctx, slow.URL+"/convert?celsius=1&unit=F", &v); code != 0 {
		t.Errorf("status %d; want the client's deadline to end the call", code)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %s: the delay did not end with the client's request", took)
	}
}
