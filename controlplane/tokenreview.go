package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

const (
	// tokenReviewTimeout bounds one TokenReview, whatever the caller's
	// deadline.
	tokenReviewTimeout = 10 * time.Second
	// maxCachedTokens bounds the cache; when it is full of live entries,
	// new tokens are reviewed but not remembered.
	maxCachedTokens = 8192
	// podNameExtra is the TokenReview user extra naming the pod a token is
	// bound to.
	podNameExtra = "authentication.kubernetes.io/pod-name"
)

// serviceAccount is who a token belongs to.
type serviceAccount struct {
	Namespace, Name string
	// Pod is the pod the token is bound to, when it is.
	Pod string
}

type cachedReview struct {
	sa      serviceAccount
	expires time.Time
}

// tokenReviewer checks ServiceAccount tokens with the API server's
// TokenReview, and remembers accepted ones for a short while, keyed by the
// token's SHA-256 (the token itself is not kept). Refusals are not
// remembered: a refusal may come from a transient failure.
type tokenReviewer struct {
	kube    kubernetes.Interface
	ttl     time.Duration
	now     func() time.Time
	metrics *identityMetrics

	mu    sync.Mutex
	cache map[[sha256.Size]byte]cachedReview
}

func newTokenReviewer(kube kubernetes.Interface, ttl time.Duration, m *identityMetrics) *tokenReviewer {
	return &tokenReviewer{kube: kube, ttl: ttl, now: time.Now, metrics: m, cache: map[[sha256.Size]byte]cachedReview{}}
}

// review returns the ServiceAccount token belongs to, or a refusal:
// Unauthenticated when the API server does not accept it for audience
// trellis or it is not a ServiceAccount's, Unavailable when the API server
// could not be asked.
func (r *tokenReviewer) review(ctx context.Context, token string) (serviceAccount, *refusal) {
	var key [sha256.Size]byte
	if r.ttl > 0 {
		key = sha256.Sum256([]byte(token))
		if sa, ok := r.cached(key); ok {
			r.metrics.reviews.cached.Inc()
			return sa, nil
		}
	}
	if r.kube == nil {
		return serviceAccount{}, refuse(codes.Unavailable, reasonTokenReviewFailed,
			"this control plane has no Kubernetes client to review tokens with")
	}
	ctx, cancel := context.WithTimeout(ctx, tokenReviewTimeout)
	defer cancel()
	tr, err := r.kube.AuthenticationV1().TokenReviews().Create(ctx, &authnv1.TokenReview{
		Spec: authnv1.TokenReviewSpec{Token: token, Audiences: []string{TokenAudience}},
	}, metav1.CreateOptions{})
	if err != nil {
		r.metrics.reviews.failed.Inc()
		return serviceAccount{}, refuse(codes.Unavailable, reasonTokenReviewFailed,
			"could not check the token with the Kubernetes API server (TokenReview): %v; retry later", err)
	}
	st := tr.Status
	if !st.Authenticated {
		r.metrics.reviews.rejected.Inc()
		why := st.Error
		if why == "" {
			why = "no reason given"
		}
		return serviceAccount{}, refuse(codes.Unauthenticated, reasonInvalidToken,
			"the Kubernetes API server does not accept the token for audience %q (%s): it may be expired, for another audience, or its ServiceAccount or pod deleted; send the pod's projected token with audience %q",
			TokenAudience, why, TokenAudience)
	}
	// A client that names audiences must check that the answer is for one
	// of them (TokenReviewStatus.audiences).
	if !slices.Contains(st.Audiences, TokenAudience) {
		r.metrics.reviews.rejected.Inc()
		return serviceAccount{}, refuse(codes.Unauthenticated, reasonInvalidToken,
			"the token is valid for audiences %q, not %q: project the pod's token with audience %q", st.Audiences, TokenAudience, TokenAudience)
	}
	ns, name, ok := splitServiceAccountUsername(st.User.Username)
	if !ok {
		r.metrics.reviews.rejected.Inc()
		return serviceAccount{}, refuse(codes.Unauthenticated, reasonNotServiceAccount,
			"the token is user %q's, not a ServiceAccount's: send the pod's ServiceAccount token", st.User.Username)
	}
	r.metrics.reviews.authenticated.Inc()
	sa := serviceAccount{Namespace: ns, Name: name}
	if pods := st.User.Extra[podNameExtra]; len(pods) == 1 {
		sa.Pod = pods[0]
	}
	if r.ttl > 0 {
		r.remember(key, sa, token)
	}
	return sa, nil
}

func (r *tokenReviewer) cached(key [sha256.Size]byte) (serviceAccount, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[key]
	if !ok {
		return serviceAccount{}, false
	}
	if !r.now().Before(e.expires) {
		delete(r.cache, key)
		return serviceAccount{}, false
	}
	return e.sa, true
}

// remember caches an accepted token until the cache TTL or the token's
// own expiry, whichever is first. A token whose expiry cannot be read is
// not cached. Reading exp without checking the signature is safe: the key
// is the hash of this exact token, which the API server just verified.
func (r *tokenReviewer) remember(key [sha256.Size]byte, sa serviceAccount, token string) {
	exp, ok := jwtExpiry(token)
	if !ok {
		return
	}
	now := r.now()
	expires := now.Add(r.ttl)
	if exp.Before(expires) {
		expires = exp
	}
	if !now.Before(expires) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cache) >= maxCachedTokens {
		for k, e := range r.cache {
			if !now.Before(e.expires) {
				delete(r.cache, k)
			}
		}
		if len(r.cache) >= maxCachedTokens {
			return
		}
	}
	r.cache[key] = cachedReview{sa: sa, expires: expires}
}

// jwtExpiry reads the exp claim of a JWT without verifying it.
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp *int64 `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil || claims.Exp == nil {
		return time.Time{}, false
	}
	return time.Unix(*claims.Exp, 0), true
}

// splitServiceAccountUsername splits system:serviceaccount:<ns>:<name>.
func splitServiceAccountUsername(username string) (namespace, name string, ok bool) {
	rest, ok := strings.CutPrefix(username, "system:serviceaccount:")
	if !ok {
		return "", "", false
	}
	namespace, name, ok = strings.Cut(rest, ":")
	if !ok || namespace == "" || name == "" || strings.Contains(name, ":") {
		return "", "", false
	}
	return namespace, name, true
}
