package install

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	operatorsv1alpha1 "github.com/operator-framework/api/pkg/operators/v1alpha1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/trellis-mesh/trellis/ca"
	"github.com/trellis-mesh/trellis/test/testenv"
)

// OLMNamespace is where OperatorFromBundle installs the operator: the CSV's
// suggested namespace.
const OLMNamespace = "trellis-operator"

// OperatorFromBundle installs the operator from the OLM bundle in bundle/
// as OLM would for an AllNamespaces OperatorGroup, without OLM (it cannot
// run here): the bundle's CRDs and other objects; the CSV's ServiceAccount,
// its permissions and clusterPermissions as Roles and ClusterRoles; for
// each webhookdefinition, OLM's Service <deployment>-service, a CA and
// serving certificate of OLM's own making in the Secret
// <deployment>-service-cert, mounted where OLM mounts it
// (/tmp/k8s-webhook-server/serving-certs and
// /apiserver.local.config/certificates), and the webhook configuration
// under a generated name, labeled olm.webhook-description-generate-name,
// with OLM's caBundle; then the Deployment, and it waits until it is
// available and the API server reaches its webhook.
func (c Cluster) OperatorFromBundle(ctx context.Context) error {
	dir := filepath.Join(testenv.RepoRoot(), "bundle", "manifests")
	csv, others, err := readBundle(dir)
	if err != nil {
		return err
	}
	objs := []any{&corev1.Namespace{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"},
		ObjectMeta: metav1.ObjectMeta{Name: OLMNamespace, Labels: map[string]string{"trellis-injection": "disabled"}},
	}}
	install := csv.Spec.InstallStrategy.StrategySpec
	for _, p := range install.Permissions {
		objs = append(objs, olmPermission(csv.Name, p, false)...)
	}
	for _, p := range install.ClusterPermissions {
		objs = append(objs, olmPermission(csv.Name, p, true)...)
	}
	deployments := map[string]*appsv1.Deployment{}
	var order []string
	for _, d := range install.DeploymentSpecs {
		dep := &appsv1.Deployment{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
			ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: OLMNamespace, Labels: d.Label},
			Spec:       d.Spec,
		}
		deployments[d.Name] = dep
		order = append(order, d.Name)
	}
	root, err := ca.NewRoot("olm.invalid", 24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	served := map[string]bool{}
	for _, wh := range csv.Spec.WebhookDefinitions {
		dep := deployments[wh.DeploymentName]
		if dep == nil {
			return fmt.Errorf("CSV %s: webhookdefinition %s names deployment %q, which the install strategy does not have", csv.Name, wh.GenerateName, wh.DeploymentName)
		}
		svc := wh.DeploymentName + "-service"
		if !served[wh.DeploymentName] {
			served[wh.DeploymentName] = true
			secret, err := olmServingSecret(root, svc)
			if err != nil {
				return err
			}
			objs = append(objs, secret, olmService(svc, dep, wh))
			mountOLMCertificates(dep, secret.Name)
		}
		cfg, err := olmWebhookConfiguration(csv.Name, svc, wh, root.CertPEM)
		if err != nil {
			return err
		}
		objs = append(objs, cfg)
	}
	for _, name := range order {
		objs = append(objs, deployments[name])
	}

	var docs []string
	for _, o := range objs {
		b, err := yaml.Marshal(o)
		if err != nil {
			return err
		}
		docs = append(docs, string(b))
	}
	if _, err := c.kubectl(ctx, append([]string{"apply", "--server-side", "--force-conflicts"}, others...)...); err != nil {
		return fmt.Errorf("installing the bundle's CRDs and objects: %w", err)
	}
	if _, err := c.kubectlStdin(ctx, strings.Join(docs, "---\n"), "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
		return fmt.Errorf("installing CSV %s as OLM would: %w", csv.Name, err)
	}
	for _, name := range order {
		if _, err := c.kubectl(ctx, "-n", OLMNamespace, "rollout", "status", "deployment/"+name, "--timeout=180s"); err != nil {
			logs, _ := c.kubectl(ctx, "-n", OLMNamespace, "logs", "deployment/"+name, "--tail=30")
			return fmt.Errorf("the operator installed from the bundle did not become available: %w\n%s", err, logs)
		}
	}
	return c.waitForWebhook(ctx)
}

// readBundle reads the CSV of the bundle's manifests directory, and returns
// it with the -f arguments of every other manifest (CRDs, ClusterRoles).
func readBundle(dir string) (*operatorsv1alpha1.ClusterServiceVersion, []string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the bundle (make bundle writes it): %w", err)
	}
	var csv *operatorsv1alpha1.ClusterServiceVersion
	var others []string
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if !strings.HasSuffix(e.Name(), ".clusterserviceversion.yaml") {
			others = append(others, "-f", path)
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, nil, err
		}
		csv = &operatorsv1alpha1.ClusterServiceVersion{}
		if err := yaml.UnmarshalStrict(data, csv); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	if csv == nil {
		return nil, nil, fmt.Errorf("no ClusterServiceVersion in %s", dir)
	}
	return csv, others, nil
}

// olmPermission is a CSV permission as OLM installs it: the ServiceAccount,
// a (Cluster)Role of the rules and its binding.
func olmPermission(csv string, p operatorsv1alpha1.StrategyDeploymentPermissions, cluster bool) []any {
	name := csv + "-" + p.ServiceAccountName
	sa := &corev1.ServiceAccount{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta: metav1.ObjectMeta{Name: p.ServiceAccountName, Namespace: OLMNamespace},
	}
	subject := []rbacv1.Subject{{Kind: "ServiceAccount", Name: p.ServiceAccountName, Namespace: OLMNamespace}}
	if cluster {
		return []any{sa,
			&rbacv1.ClusterRole{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"}, ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: p.Rules},
			&rbacv1.ClusterRoleBinding{
				TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
				ObjectMeta: metav1.ObjectMeta{Name: name},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
				Subjects:   subject,
			},
		}
	}
	return []any{sa,
		&rbacv1.Role{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"}, ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: OLMNamespace}, Rules: p.Rules},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: OLMNamespace},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
			Subjects:   subject,
		},
	}
}

// olmServingSecret is OLM's <deployment>-service-cert: a serving
// certificate for the webhook Service, signed by root.
func olmServingSecret(root *ca.KeyPair, svc string) (*corev1.Secret, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	cert, err := ca.SignServing(root, key.Public(), []string{svc + "." + OLMNamespace, svc + "." + OLMNamespace + ".svc"}, 12*time.Hour, time.Now())
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: svc + "-cert", Namespace: OLMNamespace},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       ca.EncodeCertificates(cert),
			corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		},
	}, nil
}

// olmService is OLM's webhook Service for a deployment.
func olmService(name string, dep *appsv1.Deployment, wh operatorsv1alpha1.WebhookDescription) *corev1.Service {
	target := intstr.FromInt32(wh.ContainerPort)
	if wh.TargetPort != nil {
		target = *wh.TargetPort
	}
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: OLMNamespace},
		Spec: corev1.ServiceSpec{
			Selector: dep.Spec.Selector.MatchLabels,
			Ports:    []corev1.ServicePort{{Name: fmt.Sprintf("%d", wh.ContainerPort), Port: wh.ContainerPort, TargetPort: target}},
		},
	}
}

// mountOLMCertificates mounts the serving Secret into every container of
// the deployment where OLM does.
func mountOLMCertificates(dep *appsv1.Deployment, secret string) {
	spec := &dep.Spec.Template.Spec
	spec.Volumes = append(spec.Volumes,
		corev1.Volume{Name: "apiservice-cert", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: secret, Items: []corev1.KeyToPath{{Key: "tls.crt", Path: "apiserver.crt"}, {Key: "tls.key", Path: "apiserver.key"}},
		}}},
		corev1.Volume{Name: "webhook-cert", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: secret, Items: []corev1.KeyToPath{{Key: "tls.crt", Path: "tls.crt"}, {Key: "tls.key", Path: "tls.key"}},
		}}},
	)
	for i := range spec.Containers {
		spec.Containers[i].VolumeMounts = append(spec.Containers[i].VolumeMounts,
			corev1.VolumeMount{Name: "apiservice-cert", MountPath: "/apiserver.local.config/certificates"},
			corev1.VolumeMount{Name: "webhook-cert", MountPath: "/tmp/k8s-webhook-server/serving-certs"},
		)
	}
}

// olmWebhookConfiguration is the webhook configuration OLM makes of a
// webhookdefinition: a generated name, OLM's labels, its Service and CA,
// and, for an AllNamespaces OperatorGroup, a namespaceSelector matching
// every namespace.
func olmWebhookConfiguration(csv, svc string, wh operatorsv1alpha1.WebhookDescription, caPEM []byte) (any, error) {
	meta := metav1.ObjectMeta{
		Name: wh.GenerateName + "-" + strings.ToLower(rand.Text()[:5]),
		Labels: map[string]string{
			"olm.owner": csv, "olm.owner.kind": operatorsv1alpha1.ClusterServiceVersionKind, "olm.owner.namespace": OLMNamespace,
			"olm.webhook-description-generate-name": wh.GenerateName,
		},
	}
	port := wh.ContainerPort
	client := admissionregistrationv1.WebhookClientConfig{
		Service:  &admissionregistrationv1.ServiceReference{Namespace: OLMNamespace, Name: svc, Path: wh.WebhookPath, Port: &port},
		CABundle: caPEM,
	}
	everywhere := &metav1.LabelSelector{}
	switch wh.Type {
	case operatorsv1alpha1.ValidatingAdmissionWebhook:
		return &admissionregistrationv1.ValidatingWebhookConfiguration{
			TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "ValidatingWebhookConfiguration"},
			ObjectMeta: meta,
			Webhooks: []admissionregistrationv1.ValidatingWebhook{{
				Name: wh.GenerateName, ClientConfig: client, Rules: wh.Rules, FailurePolicy: wh.FailurePolicy,
				MatchPolicy: wh.MatchPolicy, ObjectSelector: wh.ObjectSelector, NamespaceSelector: everywhere,
				SideEffects: wh.SideEffects, TimeoutSeconds: wh.TimeoutSeconds, AdmissionReviewVersions: wh.AdmissionReviewVersions,
			}},
		}, nil
	case operatorsv1alpha1.MutatingAdmissionWebhook:
		return &admissionregistrationv1.MutatingWebhookConfiguration{
			TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
			ObjectMeta: meta,
			Webhooks: []admissionregistrationv1.MutatingWebhook{{
				Name: wh.GenerateName, ClientConfig: client, Rules: wh.Rules, FailurePolicy: wh.FailurePolicy,
				MatchPolicy: wh.MatchPolicy, ObjectSelector: wh.ObjectSelector, NamespaceSelector: everywhere,
				SideEffects: wh.SideEffects, TimeoutSeconds: wh.TimeoutSeconds, AdmissionReviewVersions: wh.AdmissionReviewVersions,
				ReinvocationPolicy: wh.ReinvocationPolicy,
			}},
		}, nil
	}
	return nil, fmt.Errorf("CSV %s: webhookdefinition %s has type %q, which this installer does not know", csv, wh.GenerateName, wh.Type)
}
