package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/healthcheck"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// healthEvery is the least time between two evaluations of one task's health checks: each
// reads the objects the checks name from the API server (they are not cached), and a
// rollout reconciles many times a second.
const healthEvery = 5 * time.Second

// HealthChecks is what the reconciler needs to evaluate rollout.healthChecks.
type HealthChecks struct {
	// Reader reads the checked objects straight from the API server, with the operator's
	// identity: only what an administrator's role lets it read (docs/rollout.md).
	Reader client.Reader
	// Mapper finds an object's resource and scope from its apiVersion and kind.
	Mapper meta.RESTMapper
	// ClusterKinds are the kinds (Kind.group, Kind for the core group) a check may read
	// outside the task's namespace, or cluster-scoped (--health-check-cluster-kinds).
	ClusterKinds map[schema.GroupKind]bool
}

// ParseClusterKinds reads --health-check-cluster-kinds: Kind.group, comma-separated
// ("Deployment.apps,DaemonSet.apps,Node"). Secrets are refused.
func ParseClusterKinds(s string) (map[schema.GroupKind]bool, error) {
	kinds := map[schema.GroupKind]bool{}
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		gk := schema.ParseGroupKind(f)
		if gk == secretKind {
			return nil, fmt.Errorf("health checks never read Secrets")
		}
		kinds[gk] = true
	}
	return kinds, nil
}

var secretKind = schema.GroupKind{Kind: "Secret"}

// healthMemo is a task's compiled checks and last evaluation, for one generation.
type healthMemo struct {
	generation int64
	programs   []*healthcheck.Program
	err        string
	at         time.Time
	results    []rollout.HealthResult
}

// observeHealth evaluates the task's health checks into obs (Health, HealthError), at most
// every healthEvery, and only while the run has nodes left to start: a finished run keeps
// the results it stored.
func (r *NodeTaskReconciler) observeHealth(ctx context.Context, obs *rollout.Observed) {
	task := obs.Task
	checks := task.Spec.Rollout.HealthChecks
	if len(checks) == 0 || r.Health == nil {
		return
	}
	memo, ok := loadMark[healthMemo](&r.healthMemos, task)
	if !ok || memo.generation != task.Generation {
		// Compiled once per spec change, not per reconcile.
		memo = healthMemo{generation: task.Generation}
		progs, err := healthcheck.Compile(checks)
		if err != nil {
			memo.err = err.Error()
		}
		memo.programs = progs
		storeMark(&r.healthMemos, task, memo)
	}
	if memo.err != "" {
		obs.HealthError = memo.err
		return
	}
	st := &task.Status
	if st.Revision == obs.Revision && st.CompletionTime != nil && st.Pending == 0 && st.Running == 0 {
		return // nothing left to start: the stored results stand
	}
	if memo.results != nil && obs.Now.Sub(memo.at) < healthEvery {
		obs.Health = memo.results
		return
	}
	results := make([]rollout.HealthResult, len(checks))
	for i, c := range checks {
		objects, why := r.Health.read(ctx, task, c.Object)
		if why != "" {
			results[i] = rollout.HealthResult{Name: c.Name, Message: why}
			continue
		}
		res := memo.programs[i].Eval(objects)
		results[i] = rollout.HealthResult{Name: res.Name, Healthy: res.Healthy, Message: res.Message}
	}
	memo.at, memo.results = obs.Now, results
	storeMark(&r.healthMemos, task, memo)
	obs.Health = results
}

// read returns the objects a check names (as the API server returns them), or why it cannot
// read them. The reason never holds an object's content.
func (h *HealthChecks) read(ctx context.Context, task *ntv1.NodeTask, o ntv1.HealthCheckObject) ([]map[string]any, string) {
	gv, err := schema.ParseGroupVersion(o.APIVersion)
	if err != nil {
		return nil, fmt.Sprintf("apiVersion %q is not a group/version", o.APIVersion)
	}
	gk := schema.GroupKind{Group: gv.Group, Kind: o.Kind}
	if gk == secretKind {
		return nil, "health checks never read Secrets"
	}
	mapping, err := h.Mapper.RESTMapping(gk, gv.Version)
	if err != nil {
		return nil, fmt.Sprintf("the API server serves no kind %s in %s", o.Kind, o.APIVersion)
	}
	ns := o.Namespace
	if ns == "" {
		ns = task.Namespace
	}
	clusterScoped := mapping.Scope.Name() == meta.RESTScopeNameRoot
	if (clusterScoped || ns != task.Namespace) && !h.ClusterKinds[gk] {
		where := "in namespace " + ns
		if clusterScoped {
			where, ns = "(cluster-scoped)", ""
		}
		return nil, fmt.Sprintf("%s %s is outside the task's namespace; the manager reads such objects only of the kinds its --health-check-cluster-kinds names",
			gk.String(), where)
	}
	if clusterScoped {
		ns = ""
	}
	gvk := gv.WithKind(o.Kind)
	if o.Name != "" {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		if err := h.Reader.Get(ctx, client.ObjectKey{Namespace: ns, Name: o.Name}, u); err != nil {
			return nil, readError(err, mapping.Resource.Resource, o.Name)
		}
		return []map[string]any{u.Object}, ""
	}
	sel, err := metav1.LabelSelectorAsSelector(o.Selector)
	if err != nil {
		return nil, "the selector is invalid: " + err.Error()
	}
	list := &unstructured.UnstructuredList{}
	list.SetGroupVersionKind(gv.WithKind(o.Kind + "List"))
	opts := []client.ListOption{client.MatchingLabelsSelector{Selector: sel}}
	if ns != "" {
		opts = append(opts, client.InNamespace(ns))
	}
	if err := h.Reader.List(ctx, list, opts...); err != nil {
		return nil, readError(err, mapping.Resource.Resource, "")
	}
	objects := make([]map[string]any, len(list.Items))
	for i := range list.Items {
		objects[i] = list.Items[i].Object
	}
	return objects, ""
}

// readError says why an object could not be read, and what an administrator can do.
func readError(err error, resource, name string) string {
	what := resource
	if name != "" {
		what += " " + name
	}
	switch {
	case apierrors.IsNotFound(err):
		return what + " not found"
	case apierrors.IsForbidden(err):
		return "the operator may not read " + resource + ": an administrator grants it with a ClusterRole labelled " +
			HealthCheckReaderLabel + "=true (docs/rollout.md)"
	}
	return "reading " + what + " failed: " + string(apierrors.ReasonForError(err))
}

// HealthCheckReaderLabel marks the ClusterRoles that the operator's health-check reader role
// aggregates (config/rbac/health_check_reader_role.yaml).
const HealthCheckReaderLabel = "nodetask.io/aggregate-to-health-check-reader"
