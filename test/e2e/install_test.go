package e2e

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	flowcontrolv1 "k8s.io/api/flowcontrol/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The install bundle, applied for real, and the manager running with the credentials of the
// ServiceAccount it creates: every spec of the suite then exercises the shipped RBAC, and a
// missing permission fails a test.

const (
	systemNamespace = "nodetask-system"
	managerSA       = "nodetask-controller-manager"
	e2eImage        = "example.com/nodetask-operator:e2e"
)

// installBundle builds dist/install.yaml with `make build-installer` and applies every
// object in it with server-side apply, as `kubectl apply --server-side -f` would.
func installBundle() {
	build := exec.Command("make", "-C", root, "build-installer", "IMG="+e2eImage, "KUSTOMIZE="+env("KUSTOMIZE"))
	out, err := build.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	data, err := os.ReadFile(filepath.Join(root, "dist", "install.yaml"))
	Expect(err).NotTo(HaveOccurred())
	applyAll(data)
	// The optional API Priority and Fairness objects, which the API server validates here.
	apf, err := exec.Command(env("KUSTOMIZE"), "build", filepath.Join(root, "config", "apf")).Output()
	Expect(err).NotTo(HaveOccurred())
	applyAll(apf)
}

// applyAll applies every object of a YAML stream with server-side apply.
func applyAll(data []byte) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		Expect(err).NotTo(HaveOccurred())
		obj := &unstructured.Unstructured{}
		Expect(utilyaml.Unmarshal(doc, &obj.Object)).To(Succeed())
		if obj.GetKind() == "" {
			continue
		}
		obj.SetManagedFields(nil)
		Expect(k8s.Patch(ctx, obj, client.Apply, client.FieldOwner("e2e-install"), client.ForceOwnership)).
			To(Succeed(), "applying %s %s", obj.GetKind(), obj.GetName())
	}
}

// managerKubeconfig writes a kubeconfig with a token of the bundle's ServiceAccount, from
// the TokenRequest API, as the kubelet would mount it into the manager's pod.
func managerKubeconfig() string {
	token := serviceAccountToken(managerSA, 6*time.Hour)
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["e2e"] = &clientcmdapi.Cluster{Server: c.Config.Host, CertificateAuthorityData: c.Config.CAData}
	cfg.AuthInfos[managerSA] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["manager"] = &clientcmdapi.Context{Cluster: "e2e", AuthInfo: managerSA}
	cfg.CurrentContext = "manager"
	path := filepath.Join(c.WorkDir, "manager.kubeconfig")
	Expect(clientcmd.WriteToFile(*cfg, path)).To(Succeed())
	return path
}

// serviceAccountToken returns a token of a ServiceAccount of the system namespace, from the
// TokenRequest API, as the kubelet would mount it into a pod.
func serviceAccountToken(name string, ttl time.Duration) string {
	cs, err := kubernetes.NewForConfig(c.Config)
	Expect(err).NotTo(HaveOccurred())
	tr, err := cs.CoreV1().ServiceAccounts(systemNamespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To(int64(ttl / time.Second))},
	}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	return tr.Status.Token
}

// sarFor asks whether the manager's ServiceAccount may do verb on a core resource.
func sarFor(resource, verb string) *authorizationv1.SubjectAccessReview {
	return &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:               "system:serviceaccount:" + systemNamespace + ":" + managerSA,
		Groups:             []string{"system:serviceaccounts", "system:serviceaccounts:" + systemNamespace, "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: verb, Resource: resource},
	}}
}

var _ = Describe("Install bundle", func() {
	It("is applied for real: the manager's pod is admitted in a namespace enforcing the restricted Pod Security level", func() {
		ns := &corev1.Namespace{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: systemNamespace}, ns)).To(Succeed())
		Expect(ns.Labels).To(HaveKeyWithValue("pod-security.kubernetes.io/enforce", "restricted"))
		// kube-controller-manager's deployment and replicaset controllers make the pod; no
		// scheduler runs, so it stays Pending, but Pod Security admission has let it in.
		Eventually(func() []string {
			var list corev1.PodList
			Expect(k8s.List(ctx, &list, client.InNamespace(systemNamespace), client.MatchingLabels{"control-plane": "controller-manager"})).To(Succeed())
			var images []string
			for _, p := range list.Items {
				images = append(images, p.Spec.Containers[0].Image)
			}
			return images
		}).Should(ConsistOf(e2eImage))
	})

	It("runs the manager with the ServiceAccount's token, not as an administrator", func() {
		cs, err := kubernetes.NewForConfig(c.Config)
		Expect(err).NotTo(HaveOccurred())
		review, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sarFor("secrets", "list"), metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(review.Status.Allowed).To(BeFalse(), "the manager's identity may not list secrets")
		review, err = cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sarFor("nodes", "patch"), metav1.CreateOptions{})
		Expect(err).NotTo(HaveOccurred())
		Expect(review.Status.Allowed).To(BeTrue())
		kubeconfig, err := os.ReadFile(filepath.Join(c.WorkDir, "manager.kubeconfig"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(kubeconfig)).To(ContainSubstring("token:"))
		Expect(manager.Args()).To(ContainElement("--kubeconfig=" + filepath.Join(c.WorkDir, "manager.kubeconfig")))
	})

	It("refuses a namespace editor's disruptive NodeTask and accepts an administrator's (the bundle's admission policy)", func() {
		const ns = "e2e-tenant"
		Expect(k8s.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
		for _, role := range []string{"edit", "nodetask-editor-role"} {
			Expect(k8s.Create(ctx, &rbacv1.RoleBinding{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-editor-" + role},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, Name: "tenant-editor"}},
			})).To(Succeed())
		}
		impersonated := rest.CopyConfig(c.Config)
		impersonated.Impersonate = rest.ImpersonationConfig{UserName: "tenant-editor", Groups: []string{"system:authenticated"}}
		editor, err := client.New(impersonated, client.Options{Scheme: k8s.Scheme()})
		Expect(err).NotTo(HaveOccurred())
		task := func(name string, reboot ntv1.RebootPolicy) *ntv1.NodeTask {
			return &ntv1.NodeTask{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec: ntv1.NodeTaskSpec{
					Script:       &ntv1.ScriptSpec{Inline: ptr.To("Write-Output hi")},
					NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"e2e": "no-such-node"}},
					Suspend:      true,
					Reboot:       reboot,
				},
			}
		}
		Expect(editor.Create(ctx, task("inventory", ntv1.RebootNever))).To(Succeed())
		// The API server loads a new policy asynchronously (the bundle was applied at the start).
		Eventually(func() error {
			t := task("restart", ntv1.RebootAlways)
			err := editor.Create(ctx, t)
			if err == nil {
				Expect(k8s.Delete(ctx, t)).To(Succeed())
			}
			return err
		}).Should(MatchError(And(ContainSubstring("ValidatingAdmissionPolicy 'nodetask-disruption-rights'"),
			ContainSubstring("user tenant-editor may not patch nodes"))))
		Expect(k8s.Create(ctx, task("restart", ntv1.RebootAlways))).To(Succeed(), "an administrator's")
		Expect(k8s.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})).To(Succeed())
	})

	It("puts the manager's requests in a priority level of its own (config/apf)", func() {
		pl := &flowcontrolv1.PriorityLevelConfiguration{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: "nodetask-operator"}, pl)).To(Succeed())
		cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(c.WorkDir, "manager.kubeconfig"))
		Expect(err).NotTo(HaveOccurred())
		hc, err := rest.HTTPClientFor(cfg)
		Expect(err).NotTo(HaveOccurred())
		resp, err := hc.Get(strings.TrimSuffix(cfg.Host, "/") + "/api/v1/nodes?limit=1")
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(200))
		// The API server names the priority level it classified the request into.
		Expect(resp.Header.Get("X-Kubernetes-PF-PriorityLevel-UID")).To(Equal(string(pl.UID)))
	})
})
