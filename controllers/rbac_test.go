package controllers

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// TestManagerRoleIsLeastPrivilege reads the shipped ClusterRole (generated from the
// +kubebuilder:rbac markers) and checks what it must never grant. The e2e suite runs the
// manager with exactly this role, so a missing permission fails there.
func TestManagerRoleIsLeastPrivilege(t *testing.T) {
	g := NewWithT(t)
	data, err := os.ReadFile(filepath.Join("..", "config", "rbac", "role.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	var role rbacv1.ClusterRole
	g.Expect(yaml.Unmarshal(data, &role)).To(Succeed())
	g.Expect(role.Rules).NotTo(BeEmpty())
	granted := map[string][]string{}
	for _, rule := range role.Rules {
		for _, list := range [][]string{rule.APIGroups, rule.Resources, rule.Verbs} {
			g.Expect(list).NotTo(ContainElement("*"), "no wildcard: %+v", rule)
		}
		g.Expect(rule.NonResourceURLs).To(BeEmpty())
		g.Expect(rule.ResourceNames).To(BeEmpty())
		for _, res := range rule.Resources {
			g.Expect(res).NotTo(Equal("secrets"), "the manager never reads secrets")
			granted[res] = append(granted[res], rule.Verbs...)
		}
	}
	// Writes the manager needs, and no more of them.
	g.Expect(granted["nodes"]).To(ConsistOf("get", "list", "watch", "patch"))
	g.Expect(granted["pods/eviction"]).To(ConsistOf("create"))
	g.Expect(granted["pods"]).To(ConsistOf("get", "list", "watch", "create", "delete"))
	// NodeTasks are created and deleted only by the schedule controller, for schedules' runs.
	g.Expect(granted["nodetasks"]).To(ConsistOf("get", "list", "watch", "create", "delete"))
	g.Expect(granted["nodetaskschedules"]).To(ConsistOf("get", "list", "watch"))
	g.Expect(granted["nodetaskschedules/status"]).To(ConsistOf("get", "update", "patch"))
	g.Expect(granted["nodetasks/status"]).To(ConsistOf("get", "update", "patch"))
	// NodeResultSlices are the operator's own: it writes them for tasks with many nodes.
	// No patch, and no status subresource (the kind has none).
	g.Expect(granted["noderesultslices"]).To(ConsistOf("get", "list", "watch", "create", "update", "delete"))
	g.Expect(granted).NotTo(HaveKey("noderesultslices/status"))
}

// TestUsersOnlyReadResultSlices: the roles for people read NodeResultSlices and never write
// them; only the operator does.
func TestUsersOnlyReadResultSlices(t *testing.T) {
	g := NewWithT(t)
	for _, file := range []string{"nodetask_viewer_role.yaml", "nodetask_editor_role.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "config", "rbac", file))
		g.Expect(err).NotTo(HaveOccurred())
		var role rbacv1.ClusterRole
		g.Expect(yaml.Unmarshal(data, &role)).To(Succeed())
		var verbs []string
		for _, rule := range role.Rules {
			for _, res := range rule.Resources {
				if res == "noderesultslices" || strings.HasPrefix(res, "noderesultslices/") {
					g.Expect(res).To(Equal("noderesultslices"), file)
					g.Expect(rule.APIGroups).To(Equal([]string{"nodetask.io"}), file)
					verbs = append(verbs, rule.Verbs...)
				}
			}
		}
		g.Expect(verbs).To(ConsistOf("get", "list", "watch"), file)
	}
}

// TestHealthCheckReaderIsOptIn: the role through which rollout.healthChecks read objects grants
// nothing by itself (its rules come only from ClusterRoles an administrator labels), its
// selector is the label the operator's messages name, and the shipped example never reads
// Secrets and only reads.
func TestHealthCheckReaderIsOptIn(t *testing.T) {
	g := NewWithT(t)
	read := func(file string) rbacv1.ClusterRole {
		data, err := os.ReadFile(filepath.Join("..", "config", "rbac", file))
		g.Expect(err).NotTo(HaveOccurred())
		var role rbacv1.ClusterRole
		g.Expect(yaml.Unmarshal(data, &role)).To(Succeed())
		return role
	}
	reader := read("health_check_reader_role.yaml")
	g.Expect(reader.Rules).To(BeEmpty())
	g.Expect(reader.AggregationRule.ClusterRoleSelectors).To(HaveLen(1))
	g.Expect(reader.AggregationRule.ClusterRoleSelectors[0].MatchLabels).To(Equal(map[string]string{HealthCheckReaderLabel: "true"}))

	example := read("health_check_reader_example.yaml")
	g.Expect(example.Labels).To(HaveKeyWithValue(HealthCheckReaderLabel, "true"))
	for _, rule := range example.Rules {
		g.Expect(rule.Verbs).To(ConsistOf("get", "list"))
		g.Expect(rule.Resources).NotTo(ContainElement("secrets"))
		g.Expect(rule.Resources).NotTo(ContainElement("*"))
	}

	kustomization, err := os.ReadFile(filepath.Join("..", "config", "rbac", "kustomization.yaml"))
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(string(kustomization)).To(ContainSubstring("- health_check_reader_role.yaml"))
	g.Expect(string(kustomization)).NotTo(ContainSubstring("- health_check_reader_example.yaml"), "the example is opt-in")
}
