package dataplane

import (
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	controlplanev1 "github.com/trellis-mesh/trellis/proto/trellis/controlplane/v1"
)

// headerMods are a route's or a backend's header modifiers, in the order
// the Gateway API applies them: set, add, remove.
type headerMods []*controlplanev1.HeaderModifier

func (mods headerMods) apply(h http.Header) {
	for _, m := range mods {
		switch m.Action {
		case controlplanev1.HeaderModifier_ACTION_SET:
			h.Set(m.Name, m.Value)
		case controlplanev1.HeaderModifier_ACTION_ADD:
			h.Add(m.Name, m.Value)
		case controlplanev1.HeaderModifier_ACTION_REMOVE:
			h.Del(m.Name)
		}
	}
}

// rewritePath is a request's path after a URL rewrite or a redirect's path:
// full replaces it, prefix replaces the part that prefix matched (the
// route's PathPrefix match).
func rewritePath(path, full, prefix, matched string) string {
	switch {
	case full != "":
		return full
	case prefix != "" && matched != "":
		rest := strings.TrimPrefix(path, strings.TrimSuffix(matched, "/"))
		switch {
		case rest == "":
			return prefix
		case strings.HasSuffix(prefix, "/"):
			return prefix + strings.TrimPrefix(rest, "/")
		default:
			return prefix + rest
		}
	}
	return path
}

// redirectLocation is where an HTTPRequestRedirectFilter sends r. A port
// is kept from the request unless the redirect sets one or changes the
// scheme (then the scheme's well-known port), and left out when it is the
// scheme's well-known port, as the Gateway API says. dstPort is the port
// the app dialed, for a Host header without one.
func redirectLocation(r *http.Request, rd *controlplanev1.Redirect, matched string, dstPort uint16) string {
	scheme := "http"
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	host, portStr, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, portStr = r.Host, strconv.Itoa(int(dstPort))
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	port, _ := strconv.Atoi(portStr)
	switch {
	case rd.Port != 0:
		port = int(rd.Port)
	case rd.Scheme != "":
		port = wellKnownPort(scheme)
	}
	u := url.URL{Scheme: scheme, Host: host, Path: rewritePath(r.URL.Path, rd.FullPath, rd.PrefixPath, matched), RawQuery: r.URL.RawQuery}
	if port != 0 && port != wellKnownPort(scheme) {
		u.Host = net.JoinHostPort(host, strconv.Itoa(port))
	}
	return u.String()
}

func wellKnownPort(scheme string) int {
	if scheme == "https" {
		return 443
	}
	return 80
}

// redirect answers r with rd.
func redirect(w http.ResponseWriter, r *http.Request, rd *controlplanev1.Redirect, matched string, dstPort uint16) int {
	code := int(rd.StatusCode)
	if code == 0 {
		code = http.StatusFound
	}
	w.Header().Set("Location", redirectLocation(r, rd, matched, dstPort))
	w.WriteHeader(code)
	return code
}
