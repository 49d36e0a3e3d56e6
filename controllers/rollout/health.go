package rollout

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The health gate (spec.rollout.healthChecks): the reconciler evaluates the checks over the
// objects they name (controllers/healthcheck) and passes the results in Observed.Health; here
// they become the gate and their status. While a check does not hold no node starts or is
// claimed, and once one has not held for its failAfterSeconds the run stalls until it holds
// again. When a check changed between holding and not is kept in status, so that
// failAfterSeconds counts across reconciles and manager restarts.

// healthRecheck is how often a task whose check does not hold looks again: the checked
// objects are not watched (the operator would have to cache every kind a check may name).
const healthRecheck = 10 * time.Second

// healthGate is where the run stands with its health checks.
type healthGate struct {
	// checks are the checks' status, in spec order.
	checks []ntv1.HealthCheckStatus
	// failing names the checks that do not hold; stalled those past their failAfterSeconds.
	failing, stalled []string
	// failingSince is when the earliest failing check stopped holding.
	failingSince time.Time
	// next is when the gate changes by itself (a failAfterSeconds runs out, a re-check is due).
	next time.Duration
}

// healthOf merges this pass's results with the stored status. Without results (the
// reconciler did not evaluate the checks in this pass) the stored ones stand; a check with
// neither (not evaluated yet) does not hold.
func healthOf(task *ntv1.NodeTask, results []HealthResult, now time.Time) healthGate {
	var h healthGate
	checks := task.Spec.Rollout.HealthChecks
	if len(checks) == 0 {
		return h
	}
	stored := map[string]ntv1.HealthCheckStatus{}
	if st := task.Status.Rollout; st != nil {
		for _, c := range st.HealthChecks {
			stored[c.Name] = c
		}
	}
	fresh := map[string]HealthResult{}
	for _, r := range results {
		fresh[r.Name] = r
	}
	if results == nil {
		for name, c := range stored {
			fresh[name] = HealthResult{Name: name, Healthy: c.Healthy, Message: c.Message}
		}
	}
	for _, c := range checks {
		r, ok := fresh[c.Name]
		if !ok {
			r = HealthResult{Name: c.Name, Message: "not evaluated yet"}
		}
		s := ntv1.HealthCheckStatus{Name: c.Name, Healthy: r.Healthy, Message: r.Message, Since: &metav1.Time{Time: now}}
		if old, ok := stored[c.Name]; ok && old.Healthy == r.Healthy && old.Since != nil {
			s.Since = old.Since
		}
		h.checks = append(h.checks, s)
		if s.Healthy {
			continue
		}
		h.failing = append(h.failing, c.Name)
		if h.failingSince.IsZero() || s.Since.Before(&metav1.Time{Time: h.failingSince}) {
			h.failingSince = s.Since.Time
		}
		h.next = Soonest(h.next, healthRecheck)
		if c.FailAfterSeconds != nil {
			if wait := s.Since.Add(time.Duration(*c.FailAfterSeconds) * time.Second).Sub(now); wait > 0 {
				h.next = Soonest(h.next, wait)
			} else {
				h.stalled = append(h.stalled, c.Name)
			}
		}
	}
	return h
}

// healthMessage says which checks do not hold and why, in the task's conditions.
func (h *healthGate) message(names []string) string {
	why := map[string]string{}
	for _, c := range h.checks {
		why[c.Name] = c.Message
	}
	msg := ""
	for i, n := range names {
		if i == 3 {
			msg += " (" + CountOf(len(names)-3, "more check") + ")"
			break
		}
		if i > 0 {
			msg += "; "
		}
		msg += "health check " + n + " does not hold"
		if why[n] != "" {
			msg += " (" + why[n] + ")"
		}
	}
	return msg
}
