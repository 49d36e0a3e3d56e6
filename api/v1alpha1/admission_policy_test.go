package v1alpha1_test

import (
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The disruption-rights policy (config/admission), in the real API server with real RBAC:
// each request is made as an impersonated user, and the API server's authorizer answers
// the policy's checks.

const tenantNS = "tenant"

// clientAs returns a client that acts as the user with the groups (and system:authenticated).
func clientAs(user string, groups ...string) client.Client {
	c := rest.CopyConfig(cfg)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append(groups, "system:authenticated")}
	cl, err := client.New(c, client.Options{Scheme: k8sClient.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	return cl
}

func serviceAccountClient(ns, name string) client.Client {
	return clientAs("system:serviceaccount:"+ns+":"+name, "system:serviceaccounts", "system:serviceaccounts:"+ns)
}

func tenantTask(name string, mutate func(*ntv1.NodeTask)) *ntv1.NodeTask {
	t := validTask(name)
	t.Namespace = tenantNS
	if mutate != nil {
		mutate(t)
	}
	return t
}

func bindCluster(name, role string, subject rbacv1.Subject) {
	Expect(k8sClient.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{subject},
	})).To(Succeed())
}

func bindInTenant(name, role string, subject rbacv1.Subject) {
	Expect(k8sClient.Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: tenantNS, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects:   []rbacv1.Subject{subject},
	})).To(Succeed())
}

func user(name string) rbacv1.Subject { return rbacv1.Subject{Kind: rbacv1.UserKind, Name: name} }

func serviceAccount(ns, name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: name}
}

var disruptive = map[string]func(*ntv1.NodeTask){
	"cordon":              func(t *ntv1.NodeTask) { t.Spec.Cordon = true },
	"drain":               func(t *ntv1.NodeTask) { t.Spec.Drain = &ntv1.DrainSpec{} },
	"reboot: Always":      func(t *ntv1.NodeTask) { t.Spec.Reboot = ntv1.RebootAlways },
	"reboot: IfRequired":  func(t *ntv1.NodeTask) { t.Spec.Reboot = ntv1.RebootIfRequired },
	"drain with selector": func(t *ntv1.NodeTask) { t.Spec.Drain = &ntv1.DrainSpec{PodSelector: &metav1.LabelSelector{}} },
}

var _ = Describe("The disruption-rights admission policy", Ordered, func() {
	var editor, tenantBot, admin, gitops, nodePatcher client.Client

	BeforeAll(func() {
		for _, file := range []string{"disruption_rights_policy.yaml", "disruption_rights_binding.yaml"} {
			for _, obj := range readObjects(filepath.Join("..", "..", "config", "admission", file)) {
				obj.SetNamespace("")
				Expect(k8sClient.Create(ctx, obj)).To(Succeed())
			}
		}
		Expect(k8sClient.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tenantNS}})).To(Succeed())
		// The shipped nodetask-editor role, as config/rbac has it. No aggregation controller
		// runs here, so it is bound beside "edit" rather than aggregated into it.
		role := readObjects(filepath.Join("..", "..", "config", "rbac", "nodetask_editor_role.yaml"))[0]
		role.SetNamespace("")
		role.SetName("nodetask-editor-role")
		Expect(k8sClient.Create(ctx, role)).To(Succeed())

		bindInTenant("editor-edit", "edit", user("editor"))
		bindInTenant("editor-nodetasks", "nodetask-editor-role", user("editor"))
		schedRole := readObjects(filepath.Join("..", "..", "config", "rbac", "nodetaskschedule_editor_role.yaml"))[0]
		schedRole.SetNamespace("")
		schedRole.SetName("nodetask-schedule-editor-role")
		Expect(k8sClient.Create(ctx, schedRole)).To(Succeed())
		bindInTenant("editor-schedules", "nodetask-schedule-editor-role", user("editor"))
		bindInTenant("bot-nodetasks", "nodetask-editor-role", serviceAccount(tenantNS, "bot"))
		bindCluster("admin", "cluster-admin", user("admin"))
		// A GitOps controller's ServiceAccount with the rights it applies disruptive tasks with.
		Expect(k8sClient.Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "gitops-applier"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{"nodetask.io"}, Resources: []string{"nodetasks", "nodetaskschedules"}, Verbs: []string{"*"}},
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}},
				{APIGroups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}},
			},
		})).To(Succeed())
		bindCluster("gitops", "gitops-applier", serviceAccount("argocd", "argocd-application-controller"))
		// May patch nodes, but evict pods only in the tenant namespace.
		Expect(k8sClient.Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "node-patcher"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}},
				{APIGroups: []string{""}, Resources: []string{"pods/eviction"}, Verbs: []string{"create"}},
			},
		})).To(Succeed())
		Expect(k8sClient.Create(ctx, &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "node-patch-only"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"patch"}}},
		})).To(Succeed())
		bindCluster("node-patcher-patch", "node-patch-only", user("node-patcher"))
		bindInTenant("node-patcher-evict", "node-patcher", user("node-patcher"))
		bindInTenant("node-patcher-edit", "nodetask-editor-role", user("node-patcher"))

		editor = clientAs("editor")
		tenantBot = serviceAccountClient(tenantNS, "bot")
		admin = clientAs("admin")
		gitops = serviceAccountClient("argocd", "argocd-application-controller")
		nodePatcher = clientAs("node-patcher")

		// The API server loads a new policy asynchronously: wait until it is in force.
		Eventually(func() error {
			t := tenantTask("probe", disruptive["cordon"])
			err := editor.Create(ctx, t)
			if err == nil {
				Expect(k8sClient.Delete(ctx, t)).To(Succeed())
			}
			return err
		}).Should(HaveOccurred())
	})

	It("refuses a namespace editor's disruptive task, naming the permission it lacks", func() {
		for what, mutate := range disruptive {
			err := editor.Create(ctx, tenantTask("editor-disrupts", mutate))
			Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%s: %v", what, err)
			Expect(err.Error()).To(ContainSubstring("ValidatingAdmissionPolicy 'disruption-rights'"), what)
			Expect(err.Error()).To(ContainSubstring(
				"NodeTask tenant/editor-disrupts sets cordon, drain or reboot, so the operator would cordon, drain and restart nodes for it, but user editor may not patch nodes"), what)
		}
		err := tenantBot.Create(ctx, tenantTask("bot-disrupts", disruptive["drain"]))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "a ServiceAccount with nodetask-editor alone: %v", err)
		Expect(err.Error()).To(ContainSubstring("user system:serviceaccount:tenant:bot may not patch nodes"))
		GinkgoWriter.Println(err.Error())
	})

	It("refuses a user who may patch nodes but evict pods only in one namespace", func() {
		err := nodePatcher.Create(ctx, tenantTask("patcher-drains", disruptive["drain"]))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring("user node-patcher may not create pods/eviction in all namespaces"))
	})

	It("lets the editor create and change tasks that disrupt no node", func() {
		t := tenantTask("editor-inventory", func(t *ntv1.NodeTask) { t.Spec.Reboot = ntv1.RebootNever })
		Expect(editor.Create(ctx, t)).To(Succeed())
		t.Spec.Script.Inline = ptr.To("Write-Output changed")
		Expect(editor.Update(ctx, t)).To(Succeed())
		err := editor.Update(ctx, withSpec(t, disruptive["reboot: Always"]))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "turning a task disruptive is refused too: %v", err)
	})

	It("accepts an administrator's and a GitOps ServiceAccount's disruptive tasks", func() {
		for what, mutate := range disruptive {
			t := tenantTask("admin-disrupts", mutate)
			Expect(admin.Create(ctx, t)).To(Succeed(), what)
			Expect(k8sClient.Delete(ctx, t)).To(Succeed())
		}
		Expect(gitops.Create(ctx, tenantTask("gitops-disrupts", disruptive["drain"]))).To(Succeed())
	})

	It("refuses the editor's change to the spec of an administrator's disruptive task, not to its labels", func() {
		t := tenantTask("admin-patch", disruptive["reboot: Always"])
		Expect(admin.Create(ctx, t)).To(Succeed())

		err := editor.Update(ctx, withSpec(t, func(t *ntv1.NodeTask) { t.Spec.Script.Inline = ptr.To("Write-Output mine") }))
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "an editor would run their script with the admin's restart: %v", err)

		Expect(editor.Get(ctx, client.ObjectKeyFromObject(t), t)).To(Succeed())
		t.Labels = map[string]string{"team": "ops"}
		Expect(editor.Update(ctx, t)).To(Succeed(), "a metadata-only change is not a disruption")

		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(t), t)).To(Succeed())
		t.Status.Run = 1
		Expect(tenantBot.Status().Update(ctx, t)).To(HaveOccurred(), "the bot may not write status at all (RBAC)")
		Expect(k8sClient.Status().Update(ctx, t)).To(Succeed(), "status writes are not the policy's")
	})

	// A schedule's runs are created by the operator's ServiceAccount, which passes the
	// policy: the policy checks the schedule's author instead.
	It("refuses a namespace editor's schedule whose template disrupts nodes, naming the permission and the fields", func() {
		for what, mutate := range disruptive {
			err := editor.Create(ctx, tenantSchedule("editor-schedule", mutate))
			Expect(apierrors.IsForbidden(err)).To(BeTrue(), "%s: %v", what, err)
			Expect(err.Error()).To(ContainSubstring("ValidatingAdmissionPolicy 'disruption-rights'"), what)
			Expect(err.Error()).To(ContainSubstring(
				"NodeTaskSchedule tenant/editor-schedule has a template that sets cordon, drain or reboot, so the operator would cordon, drain and restart nodes for it, but user editor may not patch nodes"), what)
			Expect(err.Error()).To(ContainSubstring("remove spec.template.spec.cordon, spec.template.spec.drain and spec.template.spec.reboot"), what)
		}
	})

	It("lets the editor schedule tasks that disrupt no node, but not turn them disruptive", func() {
		s := tenantSchedule("editor-inventory-schedule", nil)
		Expect(editor.Create(ctx, s)).To(Succeed())
		s.Spec.Schedule = "@daily"
		Expect(editor.Update(ctx, s)).To(Succeed())
		Expect(editor.Get(ctx, client.ObjectKeyFromObject(s), s)).To(Succeed())
		s.Spec.Template.Spec.Drain = &ntv1.DrainSpec{}
		err := editor.Update(ctx, s)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "turning a schedule disruptive is refused: %v", err)
	})

	It("accepts an administrator's and a GitOps ServiceAccount's disruptive schedules; refuses the editor's change to their spec, not to labels", func() {
		for what, mutate := range disruptive {
			s := tenantSchedule("admin-schedule", mutate)
			Expect(admin.Create(ctx, s)).To(Succeed(), what)
			Expect(k8sClient.Delete(ctx, s)).To(Succeed())
		}
		Expect(gitops.Create(ctx, tenantSchedule("gitops-schedule", disruptive["drain"]))).To(Succeed())

		s := tenantSchedule("admin-weekly", disruptive["reboot: IfRequired"])
		Expect(admin.Create(ctx, s)).To(Succeed())
		Expect(editor.Get(ctx, client.ObjectKeyFromObject(s), s)).To(Succeed())
		s.Spec.Template.Spec.Script.Inline = ptr.To("Write-Output mine")
		err := editor.Update(ctx, s)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "an editor would run their script with the admin's restart: %v", err)

		Expect(editor.Get(ctx, client.ObjectKeyFromObject(s), s)).To(Succeed())
		s.Spec.Schedule = "* * * * *"
		err = editor.Update(ctx, s)
		Expect(apierrors.IsForbidden(err)).To(BeTrue(), "nor make the admin's restarts run every minute: %v", err)

		Expect(editor.Get(ctx, client.ObjectKeyFromObject(s), s)).To(Succeed())
		s.Labels = map[string]string{"team": "ops"}
		Expect(editor.Update(ctx, s)).To(Succeed(), "a metadata-only change is not a disruption")
	})
})

func tenantSchedule(name string, mutate func(*ntv1.NodeTask)) *ntv1.NodeTaskSchedule {
	t := tenantTask(name, mutate)
	return &ntv1.NodeTaskSchedule{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tenantNS},
		Spec:       ntv1.NodeTaskScheduleSpec{Schedule: "0 3 * * 6", Template: ntv1.NodeTaskTemplate{Spec: t.Spec}},
	}
}

func withSpec(t *ntv1.NodeTask, mutate func(*ntv1.NodeTask)) *ntv1.NodeTask {
	out := &ntv1.NodeTask{}
	Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(t), out)).To(Succeed())
	mutate(out)
	return out
}
