package dataplane

import (
	"testing"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

func TestAuthorize(t *testing.T) {
	const (
		api   = "spiffe://cluster.local/ns/shop/sa/api"
		batch = "spiffe://cluster.local/ns/jobs/sa/batch"
		other = "spiffe://elsewhere.example/ns/shop/sa/api"
	)
	a := &authorizer{trustDomain: "cluster.local"}
	authz := &controlplanev1.Authorization{
		DefaultDeny: true,
		Deny: []*controlplanev1.AuthorizationRule{
			{Name: "shop/no-admin/0", Paths: []string{"/admin/*"}},
		},
		Allow: []*controlplanev1.AuthorizationRule{
			{Name: "shop/api/0", Identities: []string{api}, Methods: []string{"GET", "POST"}},
			{Name: "shop/jobs/0", Namespaces: []string{"jobs"}, Ports: []uint32{9090}},
			{Name: "shop/legacy/0", Unauthenticated: true, Ports: []uint32{7070}},
			{Name: "shop/everyone-metrics/0", Identities: []string{"spiffe://*"}, Paths: []string{"/metrics"}},
		},
	}
	for _, tc := range []struct {
		what string
		c    caller
		want bool
		rule string
	}{
		{"the API's GET", caller{peer: api, port: 8080, http: true, method: "GET", path: "/orders"}, true, "shop/api/0"},
		{"the API's DELETE", caller{peer: api, port: 8080, http: true, method: "DELETE", path: "/orders"}, false, ""},
		{"deny wins over allow", caller{peer: api, port: 8080, http: true, method: "GET", path: "/admin/users"}, false, "shop/no-admin/0"},
		{"a deny rule's paths fail closed on TCP", caller{peer: api, port: 8080}, false, "shop/no-admin/0"},
		{"the jobs namespace on 9090", caller{peer: batch, port: 9090, http: true, method: "POST", path: "/x"}, true, "shop/jobs/0"},
		{"another trust domain's shop", caller{peer: other, port: 9090, http: true, method: "GET", path: "/orders"}, false, ""},
		{"unauthenticated on 7070", caller{port: 7070}, false, "shop/no-admin/0"},
		{"any identity's /metrics", caller{peer: batch, port: 8080, http: true, method: "GET", path: "/metrics"}, true, "shop/everyone-metrics/0"},
	} {
		got, rule := a.decide(authz, tc.c)
		if got != tc.want || rule != tc.rule {
			t.Errorf("%s: allowed %v by %q, want %v by %q", tc.what, got, rule, tc.want, tc.rule)
		}
	}

	// Without the deny rule: the TCP and namespace cases on their own.
	authz.Deny = nil
	for _, tc := range []struct {
		what string
		c    caller
		want bool
	}{
		{"the jobs namespace on 9090 over TCP", caller{peer: batch, port: 9090}, true},
		{"the jobs namespace on 8080", caller{peer: batch, port: 8080}, false},
		{"unauthenticated on 7070", caller{port: 7070}, true},
		{"an identity on the unauthenticated rule's port", caller{peer: api, port: 7070}, false},
		{"an allow rule's methods never hold for TCP", caller{peer: api, port: 8080}, false},
	} {
		if got, _ := a.decide(authz, tc.c); got != tc.want {
			t.Errorf("%s: allowed %v, want %v", tc.what, got, tc.want)
		}
	}
	if ok, _ := a.decide(nil, caller{port: 1}); !ok {
		t.Error("without policies, everyone may call")
	}
	if ok, _ := a.decide(&controlplanev1.Authorization{}, caller{port: 1}); !ok {
		t.Error("only Deny policies, none matching: allowed")
	}
}
