package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// tokenOf returns a token of a new ServiceAccount in the system namespace, bound to the
// ClusterRole if one is named.
func tokenOf(name, clusterRole string) string {
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: systemNamespace, Name: name}}
	Expect(k8s.Create(ctx, sa)).To(Succeed())
	if clusterRole != "" {
		Expect(k8s.Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: clusterRole},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: systemNamespace, Name: name}},
		})).To(Succeed())
	}
	return serviceAccountToken(name, time.Hour)
}

// scrape GETs the manager's /metrics over HTTPS with the token ("" for none).
func scrape(token string) (int, string) { return scrapeAt(metricsAddr, token) }

// scrapeAt GETs /metrics over HTTPS from the manager serving at addr.
func scrapeAt(addr, token string) (int, string) {
	// The manager serves a self-signed certificate when it is given none, as in this suite.
	cl := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec // a self-signed test endpoint
	}}
	req, err := http.NewRequest(http.MethodGet, "https://"+addr+"/metrics", nil)
	Expect(err).NotTo(HaveOccurred())
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := cl.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var _ = Describe("Metrics", func() {
	It("are served over HTTPS to a token bound to nodetask-metrics-reader only, with the NodeTask series", func() {
		ns := namespace(true)
		task := newTask(ns, "flaky", mainPool, annotate(
			"sim.nodetask.io/exit-code-win-0001", "1", "sim.nodetask.io/exit-code-win-0002", "2"), func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
			t.Spec.Rollout.MaxFailures = ptr.To(intstr.FromInt32(5))
		})
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue())

		reader := tokenOf("scraper", "nodetask-metrics-reader")
		stranger := tokenOf("stranger", "")
		Eventually(func() int { code, _ := scrape(reader); return code }).Should(Equal(http.StatusOK))
		code, _ := scrape("")
		Expect(code).To(Equal(http.StatusUnauthorized))
		code, _ = scrape(stranger)
		Expect(code).To(Equal(http.StatusForbidden))

		_, body := scrape(reader)
		series := func(name, labels string) string {
			for _, line := range strings.Split(body, "\n") {
				if strings.HasPrefix(line, name+"{") && strings.Contains(line, labels) {
					return line[strings.LastIndex(line, " ")+1:]
				}
			}
			return "missing"
		}
		self := fmt.Sprintf(`name="flaky",namespace=%q`, ns)
		Expect(series("nodetask_nodes", self+`,phase="Succeeded"`)).To(Equal("18"))
		Expect(series("nodetask_nodes", self+`,phase="Failed"`)).To(Equal("2"))
		Expect(series("nodetask_condition", self+`,status="True",type="Ready"`)).To(Equal("1"))
		Expect(series("nodetask_node_runs_total", self+`,reason="Error",result="Failed"`)).To(Equal("2"))
		Expect(series("nodetask_node_runs_total", self+`,reason="",result="Succeeded"`)).To(Equal("18"))
		Expect(series("nodetask_node_run_duration_seconds_count", self)).To(Equal("20"))

		Expect(k8s.Delete(ctx, task)).To(Succeed())
		Eventually(func() string { _, body = scrape(reader); return body }).ShouldNot(ContainSubstring(`name="flaky"`),
			"a deleted task's series go")
	})
})
