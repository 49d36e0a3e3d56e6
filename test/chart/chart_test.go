// Package chart tests the Helm chart with the Helm SDK: it lints, renders with default and
// other values, and checks that what the chart installs matches config/ (the CRD, the RBAC
// rules, the manager's flags), so that the two install paths cannot drift.
package chart

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/releaseutil"
)

const chartDir = "../../charts/nodetask-operator"

// render renders the chart as `helm template nodetask --namespace nodetask-system` would.
func render(t *testing.T, values map[string]any) map[string]*unstructured.Unstructured {
	g := NewWithT(t)
	chrt, err := loader.Load(chartDir)
	g.Expect(err).NotTo(HaveOccurred())
	install := action.NewInstall(&action.Configuration{})
	install.DryRun, install.ClientOnly, install.Replace = true, true, true
	install.ReleaseName, install.Namespace = "nodetask", "nodetask-system"
	install.KubeVersion = &chartutil.KubeVersion{Version: "v1.37.2", Major: "1", Minor: "37"}
	rel, err := install.Run(chrt, values)
	g.Expect(err).NotTo(HaveOccurred())
	out := map[string]*unstructured.Unstructured{}
	for _, doc := range releaseutil.SplitManifests(rel.Manifest) {
		obj := &unstructured.Unstructured{}
		g.Expect(yaml.Unmarshal([]byte(doc), &obj.Object)).To(Succeed())
		if obj.GetKind() == "" {
			continue
		}
		out[obj.GetKind()+"/"+obj.GetName()] = obj
	}
	return out
}

func as[T any](g *WithT, obj *unstructured.Unstructured) *T {
	g.Expect(obj).NotTo(BeNil())
	b, err := yaml.Marshal(obj.Object)
	g.Expect(err).NotTo(HaveOccurred())
	var out T
	g.Expect(yaml.Unmarshal(b, &out)).To(Succeed())
	return &out
}

func readFile[T any](g *WithT, path string) *T {
	data, err := os.ReadFile(filepath.Join("../..", path))
	g.Expect(err).NotTo(HaveOccurred())
	var out T
	g.Expect(yaml.Unmarshal(data, &out)).To(Succeed())
	return &out
}

func TestChartLints(t *testing.T) {
	g := NewWithT(t)
	for _, values := range []map[string]any{nil, {"replicas": 2, "metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}}}} {
		lint := action.NewLint()
		lint.Strict = true
		result := lint.Run([]string{chartDir}, values)
		for _, m := range result.Messages {
			g.Expect(m.Severity).To(BeNumerically("<", 2), "lint: %s", m) // below WarningSev
		}
		g.Expect(result.Errors).To(BeEmpty())
	}
}

func TestChartMatchesConfig(t *testing.T) {
	g := NewWithT(t)
	objs := render(t, nil)

	crd := as[apiextensionsv1.CustomResourceDefinition](g, objs["CustomResourceDefinition/nodetasks.nodetask.io"])
	want := readFile[apiextensionsv1.CustomResourceDefinition](g, "config/crd/bases/nodetask.io_nodetasks.yaml")
	g.Expect(crd.Spec).To(Equal(want.Spec), "the chart's CRD is config/crd's")
	g.Expect(crd.Annotations).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"))
	schedCRD := as[apiextensionsv1.CustomResourceDefinition](g, objs["CustomResourceDefinition/nodetaskschedules.nodetask.io"])
	wantSched := readFile[apiextensionsv1.CustomResourceDefinition](g, "config/crd/bases/nodetask.io_nodetaskschedules.yaml")
	g.Expect(schedCRD.Spec).To(Equal(wantSched.Spec), "the chart's NodeTaskSchedule CRD is config/crd's")
	g.Expect(schedCRD.Annotations).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"))
	sliceCRD := as[apiextensionsv1.CustomResourceDefinition](g, objs["CustomResourceDefinition/noderesultslices.nodetask.io"])
	wantSlice := readFile[apiextensionsv1.CustomResourceDefinition](g, "config/crd/bases/nodetask.io_noderesultslices.yaml")
	g.Expect(sliceCRD.Spec).To(Equal(wantSlice.Spec), "the chart's NodeResultSlice CRD is config/crd's")
	g.Expect(sliceCRD.Annotations).To(HaveKeyWithValue("helm.sh/resource-policy", "keep"))
	// Every CRD that config/crd installs, and no other.
	kustomization := readFile[struct {
		Resources []string `json:"resources"`
	}](g, "config/crd/kustomization.yaml")
	var wantCRDs, gotCRDs []string
	for _, res := range kustomization.Resources {
		wantCRDs = append(wantCRDs, "CustomResourceDefinition/"+readFile[apiextensionsv1.CustomResourceDefinition](g, filepath.Join("config/crd", res)).Name)
	}
	for key := range objs {
		if strings.HasPrefix(key, "CustomResourceDefinition/") {
			gotCRDs = append(gotCRDs, key)
		}
	}
	g.Expect(wantCRDs).To(HaveLen(3))
	g.Expect(gotCRDs).To(ConsistOf(wantCRDs), "the chart installs the CRDs of config/crd")

	role := as[rbacv1.ClusterRole](g, objs["ClusterRole/nodetask-manager-role"])
	g.Expect(role.Rules).To(Equal(readFile[rbacv1.ClusterRole](g, "config/rbac/role.yaml").Rules))
	leader := as[rbacv1.Role](g, objs["Role/nodetask-leader-election-role"])
	g.Expect(leader.Rules).To(Equal(readFile[rbacv1.Role](g, "config/rbac/leader_election_role.yaml").Rules))
	for _, name := range []string{"nodetask-editor-role", "nodetask-viewer-role", "schedule-editor-role", "schedule-viewer-role", "metrics-reader"} {
		g.Expect(objs).To(HaveKey("ClusterRole/nodetask-"+strings.TrimPrefix(name, "nodetask-")), name)
	}
	for file, name := range map[string]string{"nodetask_editor_role.yaml": "nodetask-editor-role", "nodetask_viewer_role.yaml": "nodetask-viewer-role"} {
		got := as[rbacv1.ClusterRole](g, objs["ClusterRole/"+name])
		g.Expect(got.Rules).To(Equal(readFile[rbacv1.ClusterRole](g, "config/rbac/"+file).Rules), "the chart's %s is config/rbac's", name)
	}

	dep := as[appsv1.Deployment](g, objs["Deployment/nodetask-controller-manager"])
	cfgDep := readDeployment(g)
	got, wantCtr := dep.Spec.Template.Spec.Containers[0], cfgDep.Spec.Template.Spec.Containers[0]
	for _, arg := range wantCtr.Args {
		g.Expect(got.Args).To(ContainElement(arg), "the chart passes config/manager's %s", arg)
	}
	g.Expect(got.Args).To(ContainElements("--kube-api-qps=200", "--kube-api-burst=400", "--max-concurrent-reconciles=4", "--pod-create-workers=16"))
	g.Expect(got.SecurityContext).To(Equal(wantCtr.SecurityContext))
	g.Expect(dep.Spec.Template.Spec.SecurityContext).To(Equal(cfgDep.Spec.Template.Spec.SecurityContext))
	g.Expect(dep.Spec.Template.Spec.NodeSelector).To(HaveKeyWithValue("kubernetes.io/os", "linux"))
	g.Expect(dep.Spec.Template.Spec.ServiceAccountName).To(Equal("nodetask-controller-manager"))
	g.Expect(objs).To(HaveKey("Service/nodetask-controller-manager-metrics"))
	g.Expect(objs).NotTo(HaveKey("ServiceMonitor/nodetask-controller-manager"))

	policy := as[admissionregistrationv1.ValidatingAdmissionPolicy](g, objs["ValidatingAdmissionPolicy/nodetask-disruption-rights"])
	g.Expect(policy.Spec).To(Equal(readFile[admissionregistrationv1.ValidatingAdmissionPolicy](g,
		"config/admission/disruption_rights_policy.yaml").Spec), "the chart's policy is config/admission's")
	binding := as[admissionregistrationv1.ValidatingAdmissionPolicyBinding](g, objs["ValidatingAdmissionPolicyBinding/nodetask-disruption-rights"])
	g.Expect(binding.Spec.PolicyName).To(Equal("nodetask-disruption-rights"))
	g.Expect(binding.Spec.ValidationActions).To(Equal(readFile[admissionregistrationv1.ValidatingAdmissionPolicyBinding](g,
		"config/admission/disruption_rights_binding.yaml").Spec.ValidationActions))
}

// TestChartHealthCheckReader: the aggregated reader role and its binding always; the
// workloads role and the cluster kinds only by value.
func TestChartHealthCheckReader(t *testing.T) {
	g := NewWithT(t)
	objs := render(t, nil)
	reader := as[rbacv1.ClusterRole](g, objs["ClusterRole/nodetask-health-check-reader"])
	want := readFile[rbacv1.ClusterRole](g, "config/rbac/health_check_reader_role.yaml")
	g.Expect(reader.AggregationRule).To(Equal(want.AggregationRule))
	g.Expect(reader.Rules).To(BeEmpty())
	binding := as[rbacv1.ClusterRoleBinding](g, objs["ClusterRoleBinding/nodetask-health-check-reader-binding"])
	g.Expect(binding.RoleRef.Name).To(Equal("nodetask-health-check-reader"))
	g.Expect(binding.Subjects[0].Name).To(Equal("nodetask-controller-manager"))
	g.Expect(objs).NotTo(HaveKey("ClusterRole/nodetask-health-check-reader-workloads"))
	dep := as[appsv1.Deployment](g, objs["Deployment/nodetask-controller-manager"])
	for _, arg := range dep.Spec.Template.Spec.Containers[0].Args {
		g.Expect(arg).NotTo(HavePrefix("--health-check-cluster-kinds"))
	}

	objs = render(t, map[string]any{"healthChecks": map[string]any{"readWorkloads": true, "clusterKinds": []any{"Deployment.apps", "Node"}}})
	workloads := as[rbacv1.ClusterRole](g, objs["ClusterRole/nodetask-health-check-reader-workloads"])
	example := readFile[rbacv1.ClusterRole](g, "config/rbac/health_check_reader_example.yaml")
	g.Expect(workloads.Rules).To(Equal(example.Rules))
	g.Expect(workloads.Labels).To(HaveKeyWithValue("nodetask.io/aggregate-to-health-check-reader", "true"))
	dep = as[appsv1.Deployment](g, objs["Deployment/nodetask-controller-manager"])
	g.Expect(dep.Spec.Template.Spec.Containers[0].Args).To(ContainElement("--health-check-cluster-kinds=Deployment.apps,Node"))
}

// TestChartAdmissionPolicy: on by default, and off only by value: never left out silently.
func TestChartAdmissionPolicy(t *testing.T) {
	g := NewWithT(t)
	g.Expect(render(t, nil)).To(HaveKey("ValidatingAdmissionPolicy/nodetask-disruption-rights"))
	off := render(t, map[string]any{"admissionPolicy": map[string]any{"enabled": false}})
	g.Expect(off).NotTo(HaveKey("ValidatingAdmissionPolicy/nodetask-disruption-rights"))
	g.Expect(off).NotTo(HaveKey("ValidatingAdmissionPolicyBinding/nodetask-disruption-rights"))
}

// readDeployment reads the manager Deployment of config/manager/manager.yaml.
func readDeployment(g *WithT) *appsv1.Deployment {
	data, err := os.ReadFile("../../config/manager/manager.yaml")
	g.Expect(err).NotTo(HaveOccurred())
	for _, doc := range releaseutil.SplitManifests(string(data)) {
		if strings.Contains(doc, "kind: Deployment") {
			var dep appsv1.Deployment
			g.Expect(yaml.Unmarshal([]byte(doc), &dep)).To(Succeed())
			return &dep
		}
	}
	g.Expect("a Deployment").To(BeEmpty(), "config/manager/manager.yaml has no Deployment")
	return nil
}

// TestChartImage: the image is the repository at the tag (appVersion by default), and at the
// digest too once image.digest is set, as `make release` sets it.
func TestChartImage(t *testing.T) {
	g := NewWithT(t)
	image := func(values map[string]any) string {
		dep := as[appsv1.Deployment](g, render(t, values)["Deployment/nodetask-controller-manager"])
		return dep.Spec.Template.Spec.Containers[0].Image
	}
	g.Expect(image(nil)).To(Equal("ghcr.io/nodetask/nodetask-operator:dev"))
	digest := "sha256:" + strings.Repeat("ab", 32)
	g.Expect(image(map[string]any{"image": map[string]any{"tag": "v0.1.0", "digest": digest}})).
		To(Equal("ghcr.io/nodetask/nodetask-operator:v0.1.0@" + digest))
}
