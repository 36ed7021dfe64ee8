package main

import (
	"slices"
	"testing"
)

func TestSplitRule(t *testing.T) {
	cases := map[string]struct {
		line string
		want []string
	}{
		"plain": {"-A FORWARD -j TRELLIS-FORWARD", []string{"-A", "FORWARD", "-j", "TRELLIS-FORWARD"}},
		"quoted comment with spaces": {
			`-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD`,
			[]string{"-A", "FORWARD", "-m", "comment", "--comment", "kubernetes forwarding rules", "-j", "KUBE-FORWARD"},
		},
		"escaped quote inside":  {`-A X --comment "a \"b\" c" -j Y`, []string{"-A", "X", "--comment", `a "b" c`, "-j", "Y"}},
		"empty quoted argument": {`-A X --comment "" -j Y`, []string{"-A", "X", "--comment", "", "-j", "Y"}},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := splitRule(tc.line); !slices.Equal(got, tc.want) {
				t.Errorf("splitRule(%q) = %q, want %q", tc.line, got, tc.want)
			}
		})
	}
}

func TestJumpsToOwn(t *testing.T) {
	cases := map[string]struct {
		rule []string
		want bool
	}{
		"jump to kube-proxy":    {[]string{"-A", "OUTPUT", "-j", "KUBE-SERVICES"}, true},
		"goto a CNI chain":      {[]string{"-A", "POSTROUTING", "-g", "CNI-HOSTPORT-MASQ"}, true},
		"accept":                {[]string{"-A", "INPUT", "-j", "ACCEPT"}, false},
		"someone else's chain":  {[]string{"-A", "FORWARD", "-j", "DOCKER-USER"}, false},
		"our name only in text": {[]string{"-A", "INPUT", "--comment", "KUBE-X", "-j", "ACCEPT"}, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := jumpsToOwn(tc.rule); got != tc.want {
				t.Errorf("jumpsToOwn(%q) = %v, want %v", tc.rule, got, tc.want)
			}
		})
	}
}

func TestNetworkNamespace(t *testing.T) {
	info := `{"ID":"x","Spec":{"linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/var/run/netns/cni-123"},{"type":"ipc"}]}}}`
	if got := networkNamespace(info); !slices.Equal(got, []string{"/var/run/netns/cni-123"}) {
		t.Errorf("got %q", got)
	}
	// A container joined to its sandbox's namespace by /proc path is not a netns to delete.
	joined := `{"Spec":{"linux":{"namespaces":[{"type":"network","path":"/proc/42/ns/net"}]}}}`
	if got := networkNamespace(joined); len(got) != 0 {
		t.Errorf("got %q for a joined namespace", got)
	}
	if got := networkNamespace("not json"); got != nil {
		t.Errorf("got %q for garbage", got)
	}
}
