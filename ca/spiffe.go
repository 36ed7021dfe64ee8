package ca

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

const spiffeScheme = "spiffe://"

// ValidateTrustDomain checks a trust domain name against the SPIFFE spec:
// lowercase letters, digits, '.', '-' and '_', at most 255 characters.
// Anything else would produce SPIFFE IDs that peers reject.
func ValidateTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty: set it to a name such as cluster.local")
	}
	if len(td) > 255 {
		return fmt.Errorf("trust domain %.40q... is %d characters long: at most 255 are allowed", td, len(td))
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !isLower(c) && !isDigit(c) && c != '.' && c != '-' && c != '_' {
			return fmt.Errorf("trust domain %q contains %q: use only lowercase letters, digits, '.', '-' and '_'", td, c)
		}
	}
	return nil
}

// SPIFFEID returns spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>.
// Every part is validated so that a bad input cannot produce an identity
// that means something else (e.g. a namespace containing "/sa/").
func SPIFFEID(trustDomain, namespace, serviceAccount string) (string, error) {
	if err := ValidateTrustDomain(trustDomain); err != nil {
		return "", err
	}
	if err := validatePathSegment(namespace); err != nil {
		return "", fmt.Errorf("namespace: %w", err)
	}
	if err := validatePathSegment(serviceAccount); err != nil {
		return "", fmt.Errorf("service account: %w", err)
	}
	return spiffeScheme + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount, nil
}

func validatePathSegment(s string) error {
	switch s {
	case "":
		return errors.New("name is empty")
	case ".", "..":
		return fmt.Errorf("name %q is not allowed in a SPIFFE ID", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isLower(c) && !isUpper(c) && !isDigit(c) && c != '.' && c != '-' && c != '_' {
			return fmt.Errorf("name %q contains %q: a SPIFFE ID path allows only letters, digits, '.', '-' and '_'", s, c)
		}
	}
	return nil
}

// parseWorkloadID validates a SPIFFE ID that names a workload (so it has a
// path) and returns its URL and trust domain. It is stricter than url.Parse,
// which would accept percent-encoding, ports, queries and the like that the
// SPIFFE spec forbids.
func parseWorkloadID(id string) (*url.URL, string, error) {
	rest, ok := strings.CutPrefix(id, spiffeScheme)
	if !ok {
		return nil, "", fmt.Errorf("SPIFFE ID %q does not start with %s", id, spiffeScheme)
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok || path == "" {
		return nil, "", fmt.Errorf("SPIFFE ID %q has no path: a workload ID looks like spiffe://<trust domain>/ns/<namespace>/sa/<service account>", id)
	}
	if err := ValidateTrustDomain(td); err != nil {
		return nil, "", fmt.Errorf("SPIFFE ID %q: %w", id, err)
	}
	for _, seg := range strings.Split(path, "/") {
		if err := validatePathSegment(seg); err != nil {
			return nil, "", fmt.Errorf("SPIFFE ID %q: path segment: %w", id, err)
		}
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, "", fmt.Errorf("SPIFFE ID %q: %w", id, err)
	}
	return u, td, nil
}

func trustDomainURI(td string) *url.URL {
	return &url.URL{Scheme: "spiffe", Host: td}
}

// spiffeTrustDomains returns the trust domains named by c's spiffe URI SANs.
func spiffeTrustDomains(c *x509.Certificate) []string {
	var tds []string
	for _, u := range c.URIs {
		if u.Scheme == "spiffe" {
			tds = append(tds, u.Host)
		}
	}
	return tds
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// ParseSPIFFEID splits a workload SPIFFE ID of the form SPIFFEID builds,
// spiffe://<trustDomain>/ns/<namespace>/sa/<serviceAccount>, into its parts.
// Anything else is an error: another path shape, percent-encoding, a port,
// user info, a query or a fragment. So a certificate's URI SAN names a
// ServiceAccount only when it parses here and SPIFFEID would build it back.
func ParseSPIFFEID(id string) (trustDomain, namespace, serviceAccount string, err error) {
	_, td, err := parseWorkloadID(id)
	if err != nil {
		return "", "", "", err
	}
	// parseWorkloadID validated every segment, so the ID is exactly
	// td + "/" + path with no escapes.
	segs := strings.Split(strings.TrimPrefix(id, spiffeScheme+td+"/"), "/")
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return "", "", "", fmt.Errorf("SPIFFE ID %q does not name a ServiceAccount: want spiffe://%s/ns/<namespace>/sa/<service account>", id, td)
	}
	return td, segs[1], segs[3], nil
}
