package controllers

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// The admission gate. Whoever can create a NodeTask makes the operator act with the
// operator's rights, and the operator may claim, cordon and drain nodes and create restart
// pods. So no node action and no pod of a run comes before the API server has said, by a
// server-side dry run (dryRun=All, which runs every admission plugin, policy and webhook
// the cluster enforces, and stores nothing), that it admits the run's pods in the task's
// namespace. A task whose pods would be refused touches no node: it is Stalled with the
// API server's refusal, and asks again with a backoff.
//
// The verdict is remembered per task for its run, its revision and its namespace's labels
// (Pod Security levels are labels): while those stay the same, one dry run serves every
// node of the run. A dry run that fails for any other reason (the API server did not
// answer) confirms nothing: the gate fails closed, and the reconcile is retried.

const (
	// admissionRecheckBase is the first wait before a refused task asks again; it doubles
	// up to admissionRecheckMax. The operator cannot watch what refused the pods (an
	// admission webhook's configuration, a policy), only the namespace's labels.
	admissionRecheckBase = 30 * time.Second
	admissionRecheckMax  = 10 * time.Minute
	// admissionRelabelRecheck is the wait after Pod Security refused pods in a namespace
	// whose labels already allow them: the API server's admission had not seen the new
	// labels yet.
	admissionRelabelRecheck = 2 * time.Second
)

// admissionKey is what a verdict holds for: the run, its content, and the namespace's labels.
type admissionKey struct {
	run       int64
	revision  string
	nsLabels  string
	namespace string
}

// admissionView is what observe read of the remembered verdict: the key of the task's
// current run, and when a remembered refusal or wait is looked at again.
type admissionView struct {
	key     admissionKey
	recheck time.Duration
}

// admissionRecord is a remembered verdict.
type admissionRecord struct {
	key     admissionKey
	verdict rollout.Admission
	// refusals counts the refusals in a row for this key, for the backoff.
	refusals int
	// recheckAt is when a refusal or a wait is looked at again.
	recheckAt time.Time
}

// admissionKeyOf returns the key of the task's current run in its namespace as cached.
func (r *NodeTaskReconciler) admissionKeyOf(ctx context.Context, task *ntv1.NodeTask, run int64, revision string) admissionKey {
	key := admissionKey{run: run, revision: revision, namespace: task.Namespace}
	var ns corev1.Namespace
	if err := r.Client.Get(ctx, types.NamespacedName{Name: task.Namespace}, &ns); err == nil {
		pairs := make([]string, 0, len(ns.Labels))
		for _, k := range slices.Sorted(maps.Keys(ns.Labels)) {
			pairs = append(pairs, k+"="+ns.Labels[k])
		}
		key.nsLabels = strings.Join(pairs, ",")
	}
	return key
}

// recallAdmission returns the remembered verdict for key, unless there is none, it is for
// another key, or it is a refusal or a wait whose time to ask again has come; and, for a
// refusal or a wait, how long until then.
func (r *NodeTaskReconciler) recallAdmission(task *ntv1.NodeTask, key admissionKey, now time.Time) (rollout.Admission, time.Duration) {
	rec, ok := loadMark[admissionRecord](&r.admissions, task)
	if !ok || rec.key != key {
		return rollout.Admission{}, 0
	}
	if rec.verdict.Confirmed {
		return rec.verdict, 0
	}
	if wait := rec.recheckAt.Sub(now); wait > 0 {
		return rec.verdict, wait
	}
	return rollout.Admission{}, 0
}

// rememberAdmission stores a verdict, and returns when a refusal or a wait is looked at again.
func (r *NodeTaskReconciler) rememberAdmission(task *ntv1.NodeTask, key admissionKey, verdict rollout.Admission, now time.Time) time.Duration {
	prev, _ := loadMark[admissionRecord](&r.admissions, task)
	rec := admissionRecord{key: key, verdict: verdict}
	var wait time.Duration
	switch {
	case verdict.Refused != nil:
		if prev.key == key {
			rec.refusals = prev.refusals
		}
		rec.refusals++
		wait = admissionBackoff(rec.refusals)
		if verdict.Refused.Reason == ntv1.ReasonPodSecurityRejected && rec.refusals == 1 && labelsAllowPrivileged(key.nsLabels) {
			wait = admissionRelabelRecheck
		}
	case verdict.Waiting != nil:
		wait = quotaRetry
	}
	rec.recheckAt = now.Add(wait)
	storeMark(&r.admissions, task, rec)
	return wait
}

// admissionBackoff is the wait after the given number of refusals in a row.
func admissionBackoff(refusals int) time.Duration {
	d := admissionRecheckBase
	for i := 1; i < refusals && d < admissionRecheckMax; i++ {
		d *= 2
	}
	return min(d, admissionRecheckMax)
}

// labelsAllowPrivileged reports whether namespace labels (as in admissionKey) set the Pod
// Security enforce level to privileged.
func labelsAllowPrivileged(nsLabels string) bool {
	return slices.Contains(strings.Split(nsLabels, ","), podSecurityEnforceLabel+"=privileged")
}

// planAdmitted computes the plan and, when it would create a pod or act on a node before the
// API server has said whether it admits the run's pods, asks it (checkAdmission) and plans
// again with the answer. recheck is when a remembered refusal or wait is looked at again.
// An error means the API server did not answer: nothing is confirmed (the gate fails
// closed), and the caller retries.
func (r *NodeTaskReconciler) planAdmitted(ctx context.Context, task *ntv1.NodeTask, obs *rollout.Observed, adm admissionView) (plan *rollout.Plan, recheck time.Duration, err error) {
	plan, recheck = rollout.ComputePlan(obs), adm.recheck
	if plan.AdmissionProbe == nil {
		return plan, recheck, nil
	}
	if obs.Admission, recheck, err = r.checkAdmission(ctx, task, adm.key, *plan.AdmissionProbe, obs.Now); err != nil {
		return nil, 0, err
	}
	return rollout.ComputePlan(obs), recheck, nil
}

// checkAdmission asks the API server, by dry runs, whether it admits the pods the plan's
// probe stands for: the run's pod on the probe's node and, for a task that restarts nodes,
// the restart pod. It returns the verdict and how long until a refusal is looked at again.
// An error means the API server did not say: nothing is confirmed, and the caller retries.
func (r *NodeTaskReconciler) checkAdmission(ctx context.Context, task *ntv1.NodeTask, key admissionKey, probe rollout.PodRequest, now time.Time) (rollout.Admission, time.Duration, error) {
	pods := []*corev1.Pod{r.Pods.Pod(task, key.run, key.revision, probe)}
	if rollout.RestartsNodes(task) {
		pods = append(pods, r.Pods.RebootPod(task, key.run, key.revision, rollout.RebootRequest{PodRequest: probe}))
	}
	verdict := rollout.Admission{Confirmed: true}
	for _, pod := range pods {
		err := r.Client.Create(ctx, pod, client.DryRunAll)
		if err == nil || apierrors.IsAlreadyExists(err) {
			// Existence is checked after admission: a pod by this name exists, and this one
			// passed every admission plugin before that was found.
			continue
		}
		refused, waiting := admissionProblem(task, err)
		if refused == nil && waiting == nil {
			return rollout.Admission{}, 0, fmt.Errorf("dry run of pod %s (no node is touched until it answers): %w", pod.Name, err)
		}
		verdict = rollout.Admission{Refused: refused, Waiting: waiting}
		break
	}
	return verdict, r.rememberAdmission(task, key, verdict, now), nil
}

// admissionProblem sorts the API server's refusal of a pod (created or dry run) by whom it
// concerns: refused (Pod Security, an admission policy or webhook, a LimitRange: the task
// stalls), waiting (a full ResourceQuota, which frees up as pods finish), or neither (an
// error to retry).
func admissionProblem(task *ntv1.NodeTask, err error) (refused, waiting *rollout.Problem) {
	switch {
	case isPodSecurityRejection(err):
		return &rollout.Problem{Reason: ntv1.ReasonPodSecurityRejected, Message: fmt.Sprintf(
			"Pod Security admission in namespace %q refuses the task's pods: HostProcess pods need a privileged namespace, "+
				"and no node was claimed, cordoned, drained or restarted. Label it with `kubectl label namespace %s "+
				"pod-security.kubernetes.io/enforce=privileged` (only where every user who can create pods there may run "+
				"code as SYSTEM on the nodes). The API server said: %s", task.Namespace, task.Namespace, apiMessage(err))}, nil
	case isQuotaRefusal(err):
		return nil, &rollout.Problem{Reason: ntv1.ReasonQuotaExceeded, Message: fmt.Sprintf(
			"a ResourceQuota in namespace %q refused new pods; nodes start as running pods finish (raise the quota, "+
				"or lower rollout.maxConcurrent to match it). The API server said: %s", task.Namespace, apiMessage(err))}
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		return &rollout.Problem{Reason: ntv1.ReasonPodCreateFailed, Message: fmt.Sprintf(
			"the API server refuses the task's pods in namespace %q, so no node was claimed, cordoned, drained or "+
				"restarted: change what its answer names (an admission policy or webhook, a LimitRange, the task's "+
				"podLabels, podAnnotations or resources). The API server said: %s", task.Namespace, apiMessage(err))}, nil
	}
	return nil, nil
}
