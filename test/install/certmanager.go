package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// certManagerNamespace is where cert-manager runs, as its own manifests
// install it.
const certManagerNamespace = "cert-manager"

// CertManager installs cert-manager as config/default expects to find it:
// its CRDs from its Go module, and its controller and CA injector
// (hack/certmanager, imaged by `make images`) with the permissions they
// use; then it waits until both are available and the CRDs are
// established. $CERT_MANAGER_DIR (the CRDs) and $CERT_MANAGER_IMAGE come
// from the Makefile.
func (c Cluster) CertManager(ctx context.Context) error {
	dir, image := os.Getenv("CERT_MANAGER_DIR"), os.Getenv("CERT_MANAGER_IMAGE")
	if dir == "" || image == "" {
		return errors.New("CERT_MANAGER_DIR and CERT_MANAGER_IMAGE must be set, as the Makefile sets them: run the tests with make")
	}
	crds, err := filepath.Glob(filepath.Join(dir, "crds", "*.yaml"))
	if err != nil || len(crds) == 0 {
		return fmt.Errorf("no cert-manager CRDs in %s/crds: run make cert-manager-binaries", dir)
	}
	args := []string{"apply", "--server-side"}
	for _, f := range crds {
		args = append(args, "-f", f)
	}
	if _, err := c.kubectl(ctx, args...); err != nil {
		return fmt.Errorf("installing cert-manager's CRDs: %w", err)
	}
	if _, err := c.kubectl(ctx, "wait", "crd", "--for=condition=Established", "--timeout=60s",
		"certificates.cert-manager.io", "certificaterequests.cert-manager.io", "issuers.cert-manager.io", "clusterissuers.cert-manager.io"); err != nil {
		return fmt.Errorf("cert-manager's CRDs are not established: %w", err)
	}
	if _, err := c.kubectlStdin(ctx, certManagerManifests(image), "apply", "--server-side", "-f", "-"); err != nil {
		return fmt.Errorf("installing cert-manager: %w", err)
	}
	for _, d := range []string{"cert-manager", "cert-manager-cainjector"} {
		if _, err := c.kubectl(ctx, "-n", certManagerNamespace, "rollout", "status", "deployment/"+d, "--timeout=120s"); err != nil {
			logs, _ := c.kubectl(ctx, "-n", certManagerNamespace, "logs", "deployment/"+d, "--tail=30")
			return fmt.Errorf("cert-manager's %s did not become available: %w\n%s", d, err, logs)
		}
	}
	return nil
}

// certManagerManifests are cert-manager's namespace, ServiceAccounts,
// cluster roles and Deployments, for the controller and the CA injector
// of hack/certmanager in image.
func certManagerManifests(image string) string {
	return strings.NewReplacer("NAMESPACE", certManagerNamespace, "IMAGE", image).Replace(`apiVersion: v1
kind: Namespace
metadata:
  name: NAMESPACE
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: cert-manager
  namespace: NAMESPACE
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: cert-manager-cainjector
  namespace: NAMESPACE
---
# The controller: issuers, the certificates' life cycle, approval, and the
# Secrets it writes the key pairs to.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: cert-manager-controller
rules:
- apiGroups: [cert-manager.io]
  resources: [issuers, issuers/status, clusterissuers, clusterissuers/status, certificates, certificates/status, certificates/finalizers, certificaterequests, certificaterequests/status, certificaterequests/finalizers]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [cert-manager.io]
  resources: [signers]
  verbs: [approve]
  resourceNames: [issuers.cert-manager.io/*, clusterissuers.cert-manager.io/*]
- apiGroups: [acme.cert-manager.io]
  resources: [orders, challenges]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: cert-manager-controller
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cert-manager-controller
subjects:
- kind: ServiceAccount
  name: cert-manager
  namespace: NAMESPACE
---
# The CA injector: reads Certificates and their Secrets, writes caBundle
# into the webhook configurations and CRDs that ask for it.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: cert-manager-cainjector
rules:
- apiGroups: [cert-manager.io]
  resources: [certificates]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [admissionregistration.k8s.io]
  resources: [mutatingwebhookconfigurations, validatingwebhookconfigurations]
  verbs: [get, list, watch, update, patch]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch, update, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: cert-manager-cainjector
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: cert-manager-cainjector
subjects:
- kind: ServiceAccount
  name: cert-manager-cainjector
  namespace: NAMESPACE
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cert-manager
  namespace: NAMESPACE
  labels: {app.kubernetes.io/name: cert-manager, app.kubernetes.io/component: controller}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: cert-manager, app.kubernetes.io/component: controller}
  template:
    metadata:
      labels: {app.kubernetes.io/name: cert-manager, app.kubernetes.io/component: controller}
    spec:
      serviceAccountName: cert-manager
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: cert-manager-controller
        image: IMAGE
        imagePullPolicy: Never
        args: [controller, --cluster-resource-namespace=NAMESPACE]
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        resources: {requests: {cpu: 10m, memory: 64Mi}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cert-manager-cainjector
  namespace: NAMESPACE
  labels: {app.kubernetes.io/name: cert-manager, app.kubernetes.io/component: cainjector}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: cert-manager, app.kubernetes.io/component: cainjector}
  template:
    metadata:
      labels: {app.kubernetes.io/name: cert-manager, app.kubernetes.io/component: cainjector}
    spec:
      serviceAccountName: cert-manager-cainjector
      securityContext: {runAsNonRoot: true, seccompProfile: {type: RuntimeDefault}}
      containers:
      - name: cert-manager-cainjector
        image: IMAGE
        imagePullPolicy: Never
        args: [cainjector]
        securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
        resources: {requests: {cpu: 10m, memory: 64Mi}}
`)
}

// certManagerState is what cert-manager's objects and logs say, for an
// error; empty where cert-manager is not installed.
func (c Cluster) certManagerState(ctx context.Context) string {
	objects, err := c.kubectl(ctx, "get", "issuers,certificates,certificaterequests", "-A", "-o", "wide")
	if err != nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("\ncert-manager's objects:\n" + objects)
	for _, d := range []string{"cert-manager", "cert-manager-cainjector"} {
		logs, _ := c.kubectl(ctx, "-n", certManagerNamespace, "logs", "deployment/"+d, "--tail=40")
		b.WriteString("\n" + d + "'s log:\n" + logs)
	}
	return b.String()
}
