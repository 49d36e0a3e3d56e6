package healthcheck

import (
	"strings"
	"testing"

	. "github.com/onsi/gomega"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/internal/testutil"
)

func check(name, expr string) ntv1.HealthCheck {
	return ntv1.HealthCheck{Name: name, Expression: expr,
		Object: ntv1.HealthCheckObject{APIVersion: "apps/v1", Kind: "Deployment", Name: "ingress"}}
}

func deployment(available, replicas int64) map[string]any {
	return map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "ingress", "annotations": map[string]any{"secret-ish": "hunter2"}},
		"spec":     map[string]any{"replicas": replicas},
		"status":   map[string]any{"availableReplicas": available},
	}
}

const available = "object.status.availableReplicas >= object.spec.replicas"

func TestCompile(t *testing.T) {
	for _, tc := range []struct {
		expr, err string
	}{
		{expr: available},
		{expr: "has(object.status.conditions) && object.status.conditions.exists(c, c.type == 'Available' && c.status == 'True')"},
		{expr: "object.status.availableReplicas >=", err: "spec.rollout.healthChecks[ingress].expression does not compile: ERROR: <input>:1:"},
		{expr: "object.status.availableReplicas + 1", err: "spec.rollout.healthChecks[ingress].expression must return a bool, not int"},
		{expr: "'ready'", err: "must return a bool, not string"},
		{expr: "unknownVar > 1", err: "undeclared reference to 'unknownVar'"},
	} {
		g := NewWithT(t)
		_, err := Compile([]ntv1.HealthCheck{check("ingress", tc.expr)})
		if tc.err == "" {
			g.Expect(err).NotTo(HaveOccurred(), tc.expr)
			continue
		}
		g.Expect(err).To(MatchError(ContainSubstring(tc.err)), tc.expr)
	}
}

func TestEval(t *testing.T) {
	g := NewWithT(t)
	progs, err := Compile([]ntv1.HealthCheck{check("ingress", available)})
	g.Expect(err).NotTo(HaveOccurred())
	p := progs[0]
	g.Expect(p.Eval([]map[string]any{deployment(3, 3)})).To(Equal(Result{Name: "ingress", Healthy: true}))
	g.Expect(p.Eval([]map[string]any{deployment(2, 3)})).To(Equal(Result{Name: "ingress", Message: "the expression is false"}))
	g.Expect(p.Eval(nil)).To(Equal(Result{Name: "ingress", Message: "no object matches"}))
	g.Expect(p.Eval([]map[string]any{deployment(3, 3), deployment(1, 3), deployment(0, 3)})).
		To(Equal(Result{Name: "ingress", Message: "the expression is false for 2 of the 3 objects selected"}))

	// A field the object does not have: the message names the field, not a value.
	missing := deployment(3, 3)
	delete(missing, "status")
	r := p.Eval([]map[string]any{missing})
	g.Expect(r.Healthy).To(BeFalse())
	g.Expect(r.Message).To(HavePrefix("the expression failed: no such key: status"))

	// Nothing of the object reaches the message.
	leak, err := Compile([]ntv1.HealthCheck{check("leak", "object.metadata.annotations['secret-ish'] == 'x'")})
	g.Expect(err).NotTo(HaveOccurred())
	r = leak[0].Eval([]map[string]any{deployment(3, 3)})
	g.Expect(r.Message).NotTo(ContainSubstring("hunter2"))
	dynamic, err := Compile([]ntv1.HealthCheck{check("dyn", "object.metadata.annotations['secret-ish']")})
	g.Expect(err).NotTo(HaveOccurred(), "a dynamic value may be a bool: only the evaluation knows")
	r = dynamic[0].Eval([]map[string]any{deployment(3, 3)})
	g.Expect(r).To(Equal(Result{Name: "dyn", Message: "the expression returned a string, not a bool"}))
}

// TestErrorsShowNoContent: an evaluation error that would quote a value of the object (a
// regular expression, a URL or an IP address that does not parse, a map key read from the
// object) says only that the expression failed; a missing field the expression names, a type
// conversion and the cost limit are shown as CEL says them.
func TestErrorsShowNoContent(t *testing.T) {
	g := NewWithT(t)
	obj := deployment(3, 3)
	obj["metadata"].(map[string]any)["annotations"].(map[string]any)["re"] = "hunter2("
	for _, tc := range []struct{ expr, want string }{
		{"'x'.matches(object.metadata.annotations['re'])", "the expression failed: an error whose message could show the object's content"},
		{"url(object.metadata.annotations['re']).getHost() == ''", "the expression failed: an error whose message"},
		{"ip(object.metadata.annotations['secret-ish']).family() == 4", "the expression failed: an error whose message"},
		{"object.metadata.annotations[object.metadata.annotations['secret-ish']] == 'x'", "the expression failed: no such key (a key taken from the object, not shown)"},
		{"object.status.numberUnavailable == 0", "the expression failed: no such key: numberUnavailable"},
		{"int(object.metadata.annotations['secret-ish']) > 0", "the expression failed: type conversion error from 'string' to 'int'"},
	} {
		progs, err := Compile([]ntv1.HealthCheck{check("c", tc.expr)})
		g.Expect(err).NotTo(HaveOccurred(), tc.expr)
		r := progs[0].Eval([]map[string]any{obj})
		g.Expect(r.Healthy).To(BeFalse(), tc.expr)
		g.Expect(r.Message).To(HavePrefix(tc.want), tc.expr)
		g.Expect(r.Message).NotTo(ContainSubstring("hunter2"), tc.expr)
	}
}

// TestCostLimit: an expression that would run for long is stopped at the API server's
// per-call limit, and reported as failing, not as healthy.
func TestCostLimit(t *testing.T) {
	g := NewWithT(t)
	items := make([]any, 2000)
	for i := range items {
		items[i] = map[string]any{"name": strings.Repeat("x", 10)}
	}
	obj := map[string]any{"spec": map[string]any{"items": items}}
	progs, err := Compile([]ntv1.HealthCheck{check("quadratic",
		"object.spec.items.all(a, object.spec.items.all(b, a.name == b.name))")})
	g.Expect(err).NotTo(HaveOccurred())
	r := progs[0].Eval([]map[string]any{obj})
	g.Expect(r.Healthy).To(BeFalse())
	g.Expect(r.Message).To(ContainSubstring("cost limit exceeded"))

	// The same expression over a small list is cheap and holds.
	small := map[string]any{"spec": map[string]any{"items": items[:10]}}
	g.Expect(progs[0].Eval([]map[string]any{small}).Healthy).To(BeTrue())
}

func TestHealthCheckTalksToNoAPIServer(t *testing.T) { testutil.AssertTalksToNoAPIServer(t) }
