package controllers

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers/schedule"
)

// scheduleRetry is how often a schedule whose run the API server refused tries again.
const scheduleRetry = time.Minute

// NodeTaskScheduleReconciler starts the runs of NodeTaskSchedules: it observes a schedule
// and the NodeTasks it controls, lets schedule.ComputePlan decide, creates and deletes
// NodeTasks as the plan says, and writes the status schedule.ComputeStatus returns.
type NodeTaskScheduleReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads a run straight from the API server when the cache has not seen it yet.
	APIReader client.Reader
	// Recorder emits events about schedules.
	Recorder events.EventRecorder
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=nodetask.io,resources=nodetaskschedules,verbs=get;list;watch
// +kubebuilder:rbac:groups=nodetask.io,resources=nodetaskschedules/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=nodetask.io,resources=nodetaskschedules/finalizers,verbs=update
// +kubebuilder:rbac:groups=nodetask.io,resources=nodetasks,verbs=create;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile brings one schedule up to date: observe, plan, act, then write the status and
// the events of what it did.
func (r *NodeTaskScheduleReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	s := &ntv1.NodeTaskSchedule{}
	if err := r.Client.Get(ctx, req.NamespacedName, s); err != nil {
		if apierrors.IsNotFound(err) {
			forgetScheduleMetrics(req.NamespacedName)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !s.DeletionTimestamp.IsZero() {
		forgetScheduleMetrics(req.NamespacedName)
		return ctrl.Result{}, nil // the runs carry owner references: the garbage collector removes them
	}
	runs, err := r.observeRuns(ctx, s)
	if err != nil {
		return ctrl.Result{}, err
	}
	obs := schedule.Observed{Schedule: s, Runs: runs, Now: r.now()}
	plan := schedule.ComputePlan(obs)

	applied, err := r.apply(ctx, s, plan)
	if err != nil {
		return ctrl.Result{}, err
	}
	st := schedule.ComputeStatus(obs, plan, applied)
	if !equality.Semantic.DeepEqual(st, s.Status) {
		updated := s.DeepCopy()
		updated.Status = st
		if err := r.Client.Status().Update(ctx, updated); err != nil {
			// A conflict means someone wrote since: look again. The run, if created, is
			// found by its name next time.
			return ctrl.Result{}, err
		}
	}
	r.emitEvents(s, plan, applied)
	recordSchedulePass(s, plan, &st)

	result := ctrl.Result{RequeueAfter: plan.RequeueAfter}
	if applied.Problem != nil && (result.RequeueAfter == 0 || result.RequeueAfter > scheduleRetry) {
		result.RequeueAfter = scheduleRetry
	}
	return result, nil
}

// observeRuns lists the NodeTasks the schedule controls. A run the status lists as active
// but the cache does not hold yet is read from the API server, so that a lagging cache does
// not make it look deleted.
func (r *NodeTaskScheduleReconciler) observeRuns(ctx context.Context, s *ntv1.NodeTaskSchedule) ([]ntv1.NodeTask, error) {
	var list ntv1.NodeTaskList
	// The label finds them (in the cache or not); the owner reference says they are this
	// schedule's: a label is anyone's to set.
	if err := r.Client.List(ctx, &list, client.InNamespace(s.Namespace), client.MatchingLabels{ntv1.LabelSchedule: s.Name}); err != nil {
		return nil, err
	}
	var runs []ntv1.NodeTask
	seen := map[string]bool{}
	for i := range list.Items {
		if ref := metav1.GetControllerOf(&list.Items[i]); ref != nil && ref.UID == s.UID {
			runs = append(runs, list.Items[i])
			seen[list.Items[i].Name] = true
		}
	}
	for _, e := range s.Status.History {
		if e.Outcome.Finished() || seen[e.Name] {
			continue
		}
		task := &ntv1.NodeTask{}
		err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: s.Namespace, Name: e.Name}, task)
		switch {
		case apierrors.IsNotFound(err):
		case err != nil:
			return nil, err
		default:
			if ref := metav1.GetControllerOf(task); ref != nil && ref.UID == s.UID {
				runs = append(runs, *task)
			}
		}
	}
	return runs, nil
}

// apply deletes what the plan replaces and prunes, and creates the due run.
func (r *NodeTaskScheduleReconciler) apply(ctx context.Context, s *ntv1.NodeTaskSchedule, plan *schedule.Plan) (schedule.Applied, error) {
	var a schedule.Applied
	for _, name := range append(append([]string(nil), plan.Replace...), plan.Prune...) {
		if err := r.deleteRun(ctx, s, name); err != nil {
			return a, err
		}
	}
	if plan.Create == "" {
		return a, nil
	}
	run := schedule.NewRun(s, plan.Create, plan.Due)
	if err := controllerutil.SetControllerReference(s, run, r.Client.Scheme()); err != nil {
		return a, err
	}
	err := r.Client.Create(ctx, run)
	switch {
	case err == nil:
		a.Started, a.Created = true, true
		recordRunStarted(s)
	case apierrors.IsAlreadyExists(err):
		// Created before: by this process before a restart, or by another replica. The name
		// says which time it is for; the owner says whether it is this schedule's.
		existing := &ntv1.NodeTask{}
		if err := r.APIReader.Get(ctx, client.ObjectKeyFromObject(run), existing); err != nil {
			return a, client.IgnoreNotFound(err) // deleted meanwhile: look again
		}
		if ref := metav1.GetControllerOf(existing); ref != nil && ref.UID == s.UID {
			a.Started = true
		} else {
			a.Problem = &schedule.Problem{Reason: ntv1.ReasonRunNameTaken, Message: fmt.Sprintf(
				"the run due at %s cannot be created: a NodeTask named %s that this schedule does not own exists; delete or rename it",
				plan.Due.UTC().Format(time.RFC3339), run.Name)}
		}
	case apierrors.IsForbidden(err) || apierrors.IsInvalid(err) || apierrors.IsBadRequest(err):
		a.Problem = &schedule.Problem{Reason: ntv1.ReasonRunRefused, Message: fmt.Sprintf(
			"the API server refused the run %s due at %s: %s", run.Name, plan.Due.UTC().Format(time.RFC3339), apiMessage(err))}
	default:
		return a, err
	}
	return a, nil
}

// deleteRun deletes a run and its pods in the background; a run already gone is fine.
func (r *NodeTaskScheduleReconciler) deleteRun(ctx context.Context, s *ntv1.NodeTaskSchedule, name string) error {
	task := &ntv1.NodeTask{}
	task.Name, task.Namespace = name, s.Namespace
	err := r.Client.Delete(ctx, task, client.PropagationPolicy(metav1.DeletePropagationBackground))
	return client.IgnoreNotFound(err)
}

// emitEvents records what this pass did.
func (r *NodeTaskScheduleReconciler) emitEvents(s *ntv1.NodeTaskSchedule, plan *schedule.Plan, a schedule.Applied) {
	if r.Recorder == nil {
		return
	}
	at := func(t time.Time) string { return t.UTC().Format(time.RFC3339) }
	if m := plan.Missed; m != nil {
		var note string
		switch {
		case m.Count > 0 && m.TooLate:
			note = fmt.Sprintf("%s scheduled times from %s to %s passed without a run, the last one more than startingDeadlineSeconds ago; none starts",
				countText(m.Count+1), at(m.First), at(m.Latest))
		case m.TooLate:
			note = fmt.Sprintf("the run due at %s is more than startingDeadlineSeconds late; it does not start", at(m.Latest))
		default:
			note = fmt.Sprintf("%s scheduled times from %s on passed without a run; only the most recent, %s, starts", countText(m.Count), at(m.First), at(m.Latest))
		}
		r.Recorder.Eventf(s, nil, corev1.EventTypeWarning, ntv1.EventMissedSchedule, "Schedule", "%s", note)
	}
	for _, name := range plan.Replace {
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, ntv1.EventRunReplaced, "Delete",
			"deleted the active run %s for the run due at %s (concurrencyPolicy Replace)", name, at(plan.Due))
	}
	if len(plan.BlockedBy) > 0 {
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, ntv1.EventRunSkipped, "Schedule",
			"the run due at %s waits: %s is still active (concurrencyPolicy Forbid)", at(plan.Due), strings.Join(plan.BlockedBy, ", "))
	}
	// Only for a run this pass created: a run found made (after a restart, or by a pass whose
	// status write failed) gets no second event, so such a pass's event can be missing.
	if a.Created {
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, ntv1.EventRunStarted, "Create", "created NodeTask %s for %s", plan.Create, at(plan.Due))
	}
	for _, name := range plan.Prune {
		r.Recorder.Eventf(s, nil, corev1.EventTypeNormal, ntv1.EventRunDeleted, "Delete", "deleted the run %s: beyond the history limits", name)
	}
}

func countText(n int) string {
	if n >= 100 {
		return "more than 100"
	}
	return fmt.Sprint(n)
}

func (r *NodeTaskScheduleReconciler) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// SetupWithManager registers the controller: it watches schedules (spec changes only: its
// own status writes do not wake it) and the NodeTasks they control, which are already in
// the cache the NodeTask controller reads.
func (r *NodeTaskScheduleReconciler) SetupWithManager(mgr ctrl.Manager) error {
	registerMetrics()
	return ctrl.NewControllerManagedBy(mgr).
		For(&ntv1.NodeTaskSchedule{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Owns(&ntv1.NodeTask{}).
		Named("nodetaskschedule").
		Complete(r)
}
