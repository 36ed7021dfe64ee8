package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	meshv1 "github.com/trellis-mesh/trellis/apis/mesh/v1alpha1"
	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/controllers"
)

// expiryWarning is how long before a certificate's expiry check warns;
// shorter-lived certificates are warned about a sixth of their life ahead.
const expiryWarning = 60 * 24 * time.Hour

// warnBefore is how long before c expires check warns about it.
func warnBefore(c *x509.Certificate) time.Duration {
	return min(expiryWarning, c.NotAfter.Sub(c.NotBefore)/6)
}

// The Mesh conditions check looks at, in this order; others the operator
// may add later are checked after them.
var meshConditions = []string{
	meshv1.ReadyCondition,
	meshv1.CAReadyCondition,
	meshv1.ControlPlaneReadyCondition,
	meshv1.InjectorReadyCondition,
	meshv1.DataPlaneUpToDateCondition,
}

func (c *checker) checkMesh(mesh *meshv1.Mesh) {
	c.group("mesh " + mesh.Name)
	c.checkMeshConditions(mesh)
	c.checkCA(mesh)
	c.checkWebhook(mesh)
}

func (c *checker) checkMeshConditions(mesh *meshv1.Mesh) {
	ns := meshNamespace(mesh)
	if mesh.Status.ObservedGeneration != mesh.Generation {
		c.warn("the operator has acted on the Mesh's spec",
			fmt.Sprintf("the status describes generation %d, the spec is at %d", mesh.Status.ObservedGeneration, mesh.Generation),
			"the operator has not reconciled the latest change yet; if this lasts, read "+c.operatorRef())
	}
	types := slices.Clone(meshConditions)
	for _, cond := range mesh.Status.Conditions {
		if !slices.Contains(types, cond.Type) {
			types = append(types, cond.Type)
		}
	}
	for _, t := range types {
		cond := meta.FindStatusCondition(mesh.Status.Conditions, t)
		name := "condition " + t + " is True"
		if cond == nil {
			switch t {
			case meshv1.InjectorReadyCondition, meshv1.DataPlaneUpToDateCondition:
				c.warn(name, "not reported", "the operator reports it when it injects sidecars; it was started without injection, or has not reconciled the Mesh yet")
			default:
				c.fail(name, "not reported", "the operator has not reconciled the Mesh: is it running? "+c.operatorRef())
			}
			continue
		}
		msg := cond.Reason
		if cond.Message != "" {
			msg += ": " + cond.Message
		}
		switch {
		case cond.Status == metav1.ConditionTrue:
			c.ok(name, msg)
		case t == meshv1.DataPlaneUpToDateCondition:
			// Old proxies still serve; it is not part of Ready.
			c.warn(name, msg, "restart the workloads named above (`kubectl rollout restart`), or set the Mesh's spec.updateStrategy.type to RollingRestart")
		case cond.Status == metav1.ConditionUnknown:
			c.warn(name, "Unknown: "+msg, "the operator has not decided yet; if this lasts, read "+c.operatorRef())
		default:
			c.fail(name, msg, conditionHint(mesh, ns, t, cond.Reason, c.operatorRef()))
		}
	}
}

// conditionHint says what to do about a False condition, beyond its message.
func conditionHint(mesh *meshv1.Mesh, ns, t, reason, operator string) string {
	switch {
	case t == meshv1.ReadyCondition:
		return "the conditions below say which part is not ready"
	case reason == meshv1.InvalidSpecReason:
		return fmt.Sprintf("fix the Mesh's spec as the message says: `kubectl edit mesh %s`", mesh.Name)
	case t == meshv1.CAReadyCondition:
		return fmt.Sprintf("`kubectl describe mesh %s` lists the operator's events; `kubectl -n %s describe certificate %s` when cert-manager issues the CA",
			mesh.Name, ns, controllers.CertificateName)
	case t == meshv1.ControlPlaneReadyCondition:
		return fmt.Sprintf("`kubectl -n %s get pods -l %s=%s` and `kubectl -n %s logs deployment/%s` say why",
			ns, controllers.LabelInstance, mesh.Name, ns, controllers.ControlPlaneName)
	case t == meshv1.InjectorReadyCondition:
		return "the message says what is missing; then read " + operator
	}
	return "read " + operator
}

// checkCA checks the root and the issuer (intermediate) that sign the
// mesh's workload certificates, from the CA Secret when it may be read,
// else from the Mesh's status.
func (c *checker) checkCA(mesh *meshv1.Mesh) {
	ns := meshNamespace(mesh)
	secret := &corev1.Secret{}
	err := c.cl.c.Get(c.ctx, client.ObjectKey{Namespace: ns, Name: controllers.CASecretName}, secret)
	if err != nil {
		c.checkCAFromStatus(mesh, err)
		return
	}
	issuers, err := ca.ParseCertificates(secret.Data[ca.IssuerCertKey])
	if err != nil {
		c.fail("the issuer certificate is valid", fmt.Sprintf("Secret %s/%s %s: %v", ns, controllers.CASecretName, ca.IssuerCertKey, err), rotationHint(mesh, c.operatorRef()))
	} else {
		c.checkExpiry(mesh, "the issuer certificate is valid", issuers[0], rotationHint(mesh, c.operatorRef()))
	}
	rootKey := ca.RootCertKey
	if mesh.Spec.CA.CertManager != nil {
		rootKey = ca.BundleKey
	}
	roots, err := ca.ParseCertificates(secret.Data[rootKey])
	if err != nil {
		if mesh.Spec.CA.CertManager != nil && len(secret.Data[rootKey]) == 0 {
			// ca.ParseIssued takes the last of tls.crt then.
			return
		}
		c.fail("the root certificate is valid", fmt.Sprintf("Secret %s/%s %s: %v", ns, controllers.CASecretName, rootKey, err), rotationHint(mesh, c.operatorRef()))
		return
	}
	for _, r := range roots {
		c.checkExpiry(mesh, "the root certificate is valid", r, rotationHint(mesh, c.operatorRef()))
	}
}

func (c *checker) checkCAFromStatus(mesh *meshv1.Mesh, readErr error) {
	st := mesh.Status.CA
	if st.IssuerNotAfter == nil {
		c.warn("the issuer certificate is valid", fmt.Sprintf("cannot read Secret %s/%s (%v) and the Mesh's status has no expiry", meshNamespace(mesh), controllers.CASecretName, readErr),
			"check with the rights to read that Secret, or wait for the operator to issue the CA")
		return
	}
	for _, e := range []struct {
		name string
		t    *metav1.Time
	}{{"the issuer certificate is valid", st.IssuerNotAfter}, {"the root certificate is valid", st.RootNotAfter}} {
		if e.t == nil {
			continue
		}
		// The status has no start: judge it as a long-lived certificate.
		cert := &x509.Certificate{NotBefore: time.Time{}, NotAfter: e.t.Time, Subject: x509.Certificate{}.Subject}
		c.checkExpiry(mesh, e.name+" (from the Mesh's status)", cert, rotationHint(mesh, c.operatorRef()))
	}
}

func (c *checker) checkExpiry(mesh *meshv1.Mesh, name string, cert *x509.Certificate, hint string) {
	left := cert.NotAfter.Sub(c.now)
	what := ""
	if cert.Subject.CommonName != "" {
		what = fmt.Sprintf("%q ", cert.Subject.CommonName)
	}
	switch {
	case left <= 0:
		c.fail(name, fmt.Sprintf("%sexpired at %s, %s ago", what, cert.NotAfter.UTC().Format(time.RFC3339), fmtAge(-left)), hint)
	case left < warnBefore(cert):
		c.warn(name, fmt.Sprintf("%sexpires at %s, in %s", what, cert.NotAfter.UTC().Format(time.RFC3339), fmtAge(left)), hint)
	default:
		c.ok(name, fmt.Sprintf("%svalid until %s", what, cert.NotAfter.UTC().Format(time.RFC3339)))
	}
}

// rotationHint says how to get a new issuer (and root) for mesh, as the
// operator does it: with the builtin CA, it replaces an expired or expiring
// root or issuer whenever it reconciles the Mesh, which any change to the
// CA Secret triggers; with cert-manager, cert-manager renews the
// Certificate and the operator takes up the new Secret.
func rotationHint(mesh *meshv1.Mesh, operator string) string {
	ns := meshNamespace(mesh)
	if mesh.Spec.CA.CertManager != nil {
		return fmt.Sprintf("cert-manager has not renewed Certificate %s/%s: `kubectl -n %s describe certificate %s` says why; "+
			"renew it now with `cmctl renew -n %s %s` (or delete Secret %s/%s so that cert-manager issues it again); the operator takes up the new Secret at once",
			ns, controllers.CertificateName, ns, controllers.CertificateName, ns, controllers.CertificateName, ns, controllers.CASecretName)
	}
	return fmt.Sprintf("the operator replaces an expired or expiring root and issuer when it reconciles Mesh %s (at least every 10 minutes, and at once when Secret %s/%s changes); "+
		"it has not: check it runs (%s), then make it act now with `kubectl -n %s annotate secret %s trellis.dev/rotate=\"$(date +%%s)\" --overwrite`. "+
		"Proxies take certificates from the new issuer as they renew theirs; `kubectl rollout restart` the meshed workloads to do it at once",
		mesh.Name, ns, controllers.CASecretName, operator, ns, controllers.CASecretName)
}

// checkWebhook checks the Mesh's injection webhook: that its configuration
// exists, that its caBundle holds valid certificates, and that a TLS
// handshake with the webhook server verifies against that caBundle, as the
// API server's does before it sends a pod.
func (c *checker) checkWebhook(mesh *meshv1.Mesh) {
	name := controllers.InjectorWebhookConfigurationName(mesh)
	title := "the injection webhook is configured"
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := c.cl.c.Get(c.ctx, client.ObjectKey{Name: name}, cfg); err != nil {
		if apierrors.IsNotFound(err) {
			c.fail(title, "MutatingWebhookConfiguration "+name+" does not exist",
				"the operator writes it for each Mesh when it serves injection; read "+c.operatorRef())
		} else {
			c.fail(title, err.Error(), "you need the right to get mutatingwebhookconfigurations")
		}
		return
	}
	c.ok(title, fmt.Sprintf("MutatingWebhookConfiguration %s, %d %s", name, len(cfg.Webhooks), plural(len(cfg.Webhooks), "webhook", "webhooks")))
	// The operator points every entry at the same server; check each
	// distinct one once.
	seen := map[string]bool{}
	for _, w := range cfg.Webhooks {
		key := fmt.Sprintf("%v|%v|%x", w.ClientConfig.URL, w.ClientConfig.Service, w.ClientConfig.CABundle)
		if seen[key] {
			continue
		}
		seen[key] = true
		c.checkWebhookEntry(name, w)
	}
}

func (c *checker) checkWebhookEntry(cfgName string, w admissionregistrationv1.MutatingWebhook) {
	ref := fmt.Sprintf("MutatingWebhookConfiguration %s webhook %s", cfgName, w.Name)
	caTitle := "the webhook's caBundle is valid"
	if len(w.ClientConfig.CABundle) == 0 {
		c.fail(caTitle, ref+" has no caBundle", "the operator copies it from its ValidatingWebhookConfiguration: with cert-manager, check its cainjector; otherwise the operator writes it at start; read "+c.operatorRef())
		return
	}
	certs, err := ca.ParseCertificates(w.ClientConfig.CABundle)
	if err != nil {
		c.fail(caTitle, fmt.Sprintf("%s: caBundle: %v", ref, err), "the caBundle must be PEM certificates; read "+c.operatorRef())
		return
	}
	pool := x509.NewCertPool()
	valid := 0
	for _, cert := range certs {
		pool.AddCert(cert)
		if c.now.Before(cert.NotAfter) {
			valid++
		}
	}
	if valid == 0 {
		c.fail(caTitle, fmt.Sprintf("%s: every certificate of its caBundle expired (the last at %s)", ref, certs[len(certs)-1].NotAfter.UTC().Format(time.RFC3339)),
			"renew the webhook's CA: with cert-manager, its Issuer's; with OLM, reinstall; without either, restart the operator, which renews its own")
		return
	}
	c.ok(caTitle, fmt.Sprintf("%d %s", len(certs), plural(len(certs), "certificate", "certificates")))

	title := "the webhook answers TLS that verifies against its caBundle"
	addr, serverName, stop, err := c.webhookAddress(w.ClientConfig)
	if err != nil {
		c.fail(title, fmt.Sprintf("%s: %v", ref, err), "the webhook's Service must select a ready pod of the operator; read "+c.operatorRef())
		return
	}
	defer stop()
	leaf, err := tlsHandshake(c.ctx, addr, serverName, pool, c.o.requestTimeout)
	if err != nil {
		hint := "the operator's webhook server is not reachable: check its pods and the Service's endpoints"
		var unknown x509.UnknownAuthorityError
		var invalid x509.CertificateInvalidError
		var hostErr x509.HostnameError
		switch {
		case errors.As(err, &unknown):
			hint = "the webhook's serving certificate is not signed by the caBundle: with cert-manager, check its cainjector and the serving Certificate; otherwise restart the operator, which writes both at start"
		case errors.As(err, &invalid):
			hint = "the webhook's serving certificate is expired or not yet valid: renew it (cert-manager renews it; otherwise restart the operator)"
		case errors.As(err, &hostErr):
			hint = "the webhook's serving certificate does not name " + serverName + ": reissue it for the Service's DNS name"
		}
		c.fail(title, fmt.Sprintf("%s (%s): %v", ref, serverName, err), hint)
		return
	}
	c.ok(title, fmt.Sprintf("%s, serving certificate valid until %s", serverName, leaf.NotAfter.UTC().Format(time.RFC3339)))
	if left := leaf.NotAfter.Sub(c.now); left < warnBefore(leaf) {
		c.warn("the webhook's serving certificate is not about to expire", fmt.Sprintf("it expires in %s", fmtAge(left)),
			"renew it: cert-manager does so on its own; otherwise restart the operator")
	}
}

// webhookAddress is where to reach a webhook and the name the API server
// verifies its certificate for: the URL's host, or, for a Service, a
// port-forward to one of its ready pods and the Service's DNS name.
func (c *checker) webhookAddress(cc admissionregistrationv1.WebhookClientConfig) (addr, serverName string, stop func(), err error) {
	if cc.URL != nil {
		u, err := url.Parse(*cc.URL)
		if err != nil {
			return "", "", nil, fmt.Errorf("clientConfig.url: %w", err)
		}
		port := u.Port()
		if port == "" {
			port = "443"
		}
		return net.JoinHostPort(u.Hostname(), port), u.Hostname(), func() {}, nil
	}
	if cc.Service == nil {
		return "", "", nil, errors.New("clientConfig has neither url nor service")
	}
	s := cc.Service
	serverName = s.Name + "." + s.Namespace + ".svc"
	port := int32(443)
	if s.Port != nil {
		port = *s.Port
	}
	svc := &corev1.Service{}
	if err := c.cl.c.Get(c.ctx, client.ObjectKey{Namespace: s.Namespace, Name: s.Name}, svc); err != nil {
		return "", "", nil, fmt.Errorf("reading the Service %s/%s: %w", s.Namespace, s.Name, err)
	}
	var target *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Port == port {
			target = &svc.Spec.Ports[i]
		}
	}
	if target == nil {
		return "", "", nil, fmt.Errorf("the Service %s/%s has no port %d", s.Namespace, s.Name, port)
	}
	var pods corev1.PodList
	if err := c.cl.c.List(c.ctx, &pods, client.InNamespace(s.Namespace), client.MatchingLabels(svc.Spec.Selector)); err != nil {
		return "", "", nil, fmt.Errorf("pods of Service %s/%s: %w", s.Namespace, s.Name, err)
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if !podReady(p) {
			continue
		}
		podPort := int(target.TargetPort.IntVal)
		if target.TargetPort.StrVal != "" {
			podPort = 0
			for _, ctr := range p.Spec.Containers {
				for _, cp := range ctr.Ports {
					if cp.Name == target.TargetPort.StrVal {
						podPort = int(cp.ContainerPort)
					}
				}
			}
		}
		if podPort == 0 {
			podPort = int(port)
		}
		local, stop, err := forwardPort(c.ctx, c.cl, s.Namespace, p.Name, 0, podPort, io.Discard)
		if err != nil {
			return "", "", nil, err
		}
		return fmt.Sprintf("127.0.0.1:%d", local), serverName, stop, nil
	}
	return "", "", nil, fmt.Errorf("the Service %s/%s selects no ready pod", s.Namespace, s.Name)
}

// tlsHandshake dials addr and verifies the server's certificate for
// serverName against roots, as the API server does when it calls a
// webhook. It returns the server's certificate.
func tlsHandshake(ctx context.Context, addr, serverName string, roots *x509.CertPool, timeout time.Duration) (*x509.Certificate, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	d := &tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: serverName, MinVersion: tls.VersionTLS12}}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	state := conn.(*tls.Conn).ConnectionState()
	if len(state.PeerCertificates) == 0 {
		return nil, errors.New("the server sent no certificate")
	}
	return state.PeerCertificates[0], nil
}
