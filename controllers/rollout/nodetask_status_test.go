package rollout

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

func findCondition(st *ntv1.NodeTaskStatus, typ string) *metav1.Condition {
	return meta.FindStatusCondition(st.Conditions, typ)
}

func TestSetConditions(t *testing.T) {
	type want struct {
		ready, reconciling, stalled metav1.ConditionStatus
		reason                      string
		message                     string
	}
	cases := []struct {
		name  string
		facts conditionFacts
		want  want
	}{
		{
			name:  "all succeeded",
			facts: conditionFacts{Counts: counts{Targets: 5, Succeeded: 5}},
			want:  want{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionFalse, ntv1.ReasonSucceeded, "succeeded on all 5 nodes"},
		},
		{
			name:  "done with failures within the budget",
			facts: conditionFacts{Counts: counts{Targets: 5, Succeeded: 4, Failed: 1}, MaxFailures: 1, Failed: []string{"win-3"}},
			want:  want{metav1.ConditionTrue, metav1.ConditionFalse, metav1.ConditionFalse, ntv1.ReasonSucceeded, "1 failed (win-3), within rollout.maxFailures (1)"},
		},
		{
			name:  "running",
			facts: conditionFacts{Counts: counts{Targets: 5, Running: 2, Pending: 3}, MaxConcurrent: 2},
			want:  want{metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionFalse, ntv1.ReasonProgressing, "0 of 5 nodes succeeded, 0 failed, 2 running, 3 pending (rollout.maxConcurrent 2)"},
		},
		{
			name:  "failure budget exceeded names a few nodes then counts",
			facts: conditionFacts{Counts: counts{Targets: 9, Failed: 5, Running: 1, Pending: 3}, Gate: GateBudgetExceeded, Failed: []string{"a", "b", "c", "d", "e"}},
			want:  want{metav1.ConditionFalse, metav1.ConditionFalse, metav1.ConditionTrue, ntv1.ReasonFailureBudgetExceeded, "5 nodes failed (a, b, c (2 more)), more than rollout.maxFailures allows (0); no further node starts and the 1 running will finish"},
		},
		{
			name:  "a problem stalls",
			facts: conditionFacts{Counts: counts{Targets: 2, Pending: 2}, Gate: GateProblem, Problem: &Problem{Reason: ntv1.ReasonPodSecurityRejected, Message: "label the namespace"}},
			want:  want{metav1.ConditionFalse, metav1.ConditionFalse, metav1.ConditionTrue, ntv1.ReasonPodSecurityRejected, "label the namespace"},
		},
		{
			name:  "no targets",
			facts: conditionFacts{},
			want:  want{metav1.ConditionFalse, metav1.ConditionFalse, metav1.ConditionFalse, ntv1.ReasonNoTargets, "no Windows node matches"},
		},
		{
			name:  "suspended and idle",
			facts: conditionFacts{Counts: counts{Targets: 2, Pending: 1, Succeeded: 1}, Gate: GateSuspended},
			want:  want{metav1.ConditionFalse, metav1.ConditionFalse, metav1.ConditionFalse, ntv1.ReasonSuspended, "set spec.suspend to false"},
		},
		{
			name:  "suspended with pods still running",
			facts: conditionFacts{Counts: counts{Targets: 2, Pending: 1, Running: 1}, Gate: GateSuspended},
			want:  want{metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionFalse, ntv1.ReasonSuspended, "the running pods will finish"},
		},
		{
			name:  "waiting for NotReady nodes",
			facts: conditionFacts{Counts: counts{Targets: 3, Pending: 1, Succeeded: 2}, NotReady: []string{"win-9"}},
			want:  want{metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionFalse, ntv1.ReasonWaitingForNodes, "waiting for nodes that are not Ready or are under pressure: win-9"},
		},
		{
			name:  "waiting for a retry",
			facts: conditionFacts{Counts: counts{Targets: 3, Pending: 1, Succeeded: 2}, Backoff: []string{"win-2"}},
			want:  want{metav1.ConditionFalse, metav1.ConditionTrue, metav1.ConditionFalse, ntv1.ReasonRetryBackoff, "waiting to retry: win-2"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			tc.facts.Generation = 7
			st := &ntv1.NodeTaskStatus{}
			setConditions(st, tc.facts)
			g.Expect(st.Conditions).To(HaveLen(3))
			ready := findCondition(st, ntv1.ConditionReady)
			g.Expect(ready.Status).To(Equal(tc.want.ready))
			g.Expect(findCondition(st, ntv1.ConditionReconciling).Status).To(Equal(tc.want.reconciling))
			g.Expect(findCondition(st, ntv1.ConditionStalled).Status).To(Equal(tc.want.stalled))
			g.Expect(ready.Reason).To(Equal(tc.want.reason))
			g.Expect(ready.Message).To(ContainSubstring(tc.want.message))
			for _, c := range st.Conditions {
				g.Expect(c.ObservedGeneration).To(BeEquivalentTo(7))
			}
		})
	}
}

func TestNameList(t *testing.T) {
	g := NewWithT(t)
	g.Expect(NameList([]string{"a"})).To(Equal("a"))
	g.Expect(NameList([]string{"a", "b", "c"})).To(Equal("a, b, c"))
	g.Expect(NameList([]string{"a", "b", "c", "d"})).To(Equal("a, b, c (1 more)"))
}

// failureMessage is a 4 KiB termination message, the most the kubelet keeps.
var failureMessage = strings.Repeat("Error: access to the path 'C:\\Windows\\Temp\\x' is denied.\r\n", 80)[:4096]

// bigStatus builds the status of a task whose every target failed with a 4 KiB message.
func bigStatus(n int, nameOf func(int) string) (*ntv1.NodeTask, ntv1.NodeTaskStatus) {
	task := newTask()
	rev := Revision(&task.Spec)
	msg := failureMessage
	obs := &Observed{Task: task, Revision: rev, Nodes: map[string]*corev1.Node{}, Now: t0, Admission: admitted}
	for i := 0; i < n; i++ {
		name := nameOf(i)
		obs.Nodes[name] = winNode(name)
		obs.Pods = append(obs.Pods, taskPod(task, name, 1, 1, exited(1, msg, t0.Add(-time.Minute))))
	}
	p := ComputePlan(obs)
	return task, ComputeStatus(obs, p, Outcome{})
}

func storedSize(g Gomega, task *ntv1.NodeTask, st ntv1.NodeTaskStatus) int {
	obj := task.DeepCopy()
	obj.Status = st
	b, err := json.Marshal(obj)
	g.Expect(err).NotTo(HaveOccurred())
	return len(b)
}

func TestStatusSizeBudget(t *testing.T) {
	cases := []struct {
		name       string
		nodes      int
		nameOf     func(int) string
		wantOutput int // bytes of output kept per node, at least
	}{
		{"5000 AKS-style names", 5000, func(i int) string { return fmt.Sprintf("akswin%06d", i) }, 1},
		// 43-character names leave no room for output at 5000 nodes: the entries stay.
		{"5000 EKS-style names", 5000, func(i int) string {
			return fmt.Sprintf("ip-10-%d-%d-%d.us-west-2.compute.internal", i/65536, (i/256)%256, i%256)
		}, 0},
		{"1000 nodes", 1000, func(i int) string { return fmt.Sprintf("akswin%06d", i) }, 512},
		{"100 nodes keep whole outputs", 100, func(i int) string { return fmt.Sprintf("win-%d", i) }, 4096},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := NewWithT(t)
			task, st := bigStatus(tc.nodes, tc.nameOf)
			size := storedSize(g, task, st)
			t.Logf("%d nodes: object %d bytes, output kept per node %d bytes", tc.nodes, size, len(st.Nodes[0].Output))
			g.Expect(size).To(BeNumerically("<", 1<<20), "the object must stay under 1 MiB")
			g.Expect(st.Nodes).To(HaveLen(tc.nodes), "no node's entry is dropped")
			g.Expect(st.Failed).To(BeEquivalentTo(tc.nodes))
			for _, e := range st.Nodes {
				g.Expect(e.Phase).To(Equal(ntv1.NodeFailed))
				g.Expect(e.ExitCode).To(HaveValue(BeEquivalentTo(1)))
			}
			for _, e := range st.Nodes {
				g.Expect(len(e.Output)).To(BeNumerically(">=", tc.wantOutput))
				// Outputs are cut from the front: what is kept is the end of the message.
				g.Expect(strings.HasSuffix(failureMessage, e.Output)).To(BeTrue())
			}
		})
	}
}

func TestTailOutput(t *testing.T) {
	g := NewWithT(t)
	g.Expect(tailOutput("hello", 10)).To(Equal("hello"))
	g.Expect(tailOutput("hello", 3)).To(Equal("llo"))
	g.Expect(tailOutput("aé", 1)).To(Equal(""), "never half a rune")
	g.Expect(tailOutput("a\xffb", 10)).To(Equal("a\uFFFDb"), "invalid UTF-8 is replaced")
}

func TestJSONStringLenIsAnUpperBound(t *testing.T) {
	g := NewWithT(t)
	for _, s := range []string{"plain", "quote\" back\\slash", "tabs\t\r\n", "<html> & co", "\x01\x1f", "line\u2028sep", "ünïcödé"} {
		b, err := json.Marshal(s)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(jsonStringLen(s)).To(BeNumerically(">=", len(b)-2), s)
	}
}

func TestStatusSizeBudgetFavoursFailures(t *testing.T) {
	// 4990 nodes succeed and 10 fail, all with 4 KiB of output: the failures keep theirs whole.
	g := NewWithT(t)
	task := newTask()
	rev := Revision(&task.Spec)
	obs := &Observed{Task: task, Revision: rev, Nodes: map[string]*corev1.Node{}, Now: t0, Admission: admitted}
	for i := 0; i < 5000; i++ {
		name := fmt.Sprintf("akswin%06d", i)
		obs.Nodes[name] = winNode(name)
		code := int32(0)
		if i%500 == 0 {
			code = 1
		}
		obs.Pods = append(obs.Pods, taskPod(task, name, 1, 1, exited(code, failureMessage, t0)))
	}
	st := ComputeStatus(obs, ComputePlan(obs), Outcome{})
	g.Expect(storedSize(g, task, st)).To(BeNumerically("<", 1<<20))
	g.Expect(st.Failed).To(BeEquivalentTo(10))
	for _, e := range st.Nodes {
		if e.Phase == ntv1.NodeFailed {
			g.Expect(e.Output).To(Equal(failureMessage))
		} else {
			g.Expect(len(e.Output)).To(BeNumerically("<", 100))
		}
	}
}

// eksName is a 43-character EKS-style node name, the longest common naming scheme.
func eksName(i int) string {
	return fmt.Sprintf("ip-10-%d-%d-%d.us-west-2.compute.internal", i/65536, (i/256)%256, i%256)
}

// finishedFleet is a task whose run 1 succeeded on n nodes, each entry with both times,
// and whose spec then changed: run 2 is about to start everywhere.
func finishedFleet(n int, mutate ...func(*ntv1.NodeTask)) *Observed {
	task := newTask(mutate...)
	obs := &Observed{Task: task, Revision: Revision(&task.Spec), Nodes: map[string]*corev1.Node{}, Now: t0, Admission: admitted}
	for i := 0; i < n; i++ {
		name := eksName(i)
		obs.Nodes[name] = winNode(name)
		obs.Pods = append(obs.Pods, taskPod(task, name, 1, 1, exited(0, "", t0.Add(-time.Minute))))
	}
	settle(obs)
	obs.Pods = nil // deleted by their TTL
	obs.Task.Spec.RerunToken = "2"
	obs.Revision = Revision(&obs.Task.Spec)
	return obs
}

func TestStatusSizeOfANewRunAt5000Nodes(t *testing.T) {
	g := NewWithT(t)
	obs := finishedFleet(5000, func(t *ntv1.NodeTask) { t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("10%")) })
	p := ComputePlan(obs)
	g.Expect(p.Problem).To(BeNil())
	g.Expect(p.Create).To(HaveLen(500))
	st := settleWith(obs, p)
	size := storedSize(g, obs.Task, st)
	t.Logf("5000 nodes with 43-character names, new run with 500 started: %d bytes", size)
	g.Expect(size).To(BeNumerically("<", maxObjectBytes-reservedBytes))
	g.Expect(st.Nodes).To(HaveLen(5000))
}

func TestStatusTooLargeStallsWithoutLosingResults(t *testing.T) {
	g := NewWithT(t)
	// The largest inline script the API allows, applied with kubectl apply, which keeps a
	// copy of the whole object in an annotation.
	script := strings.Repeat("Set-ItemProperty -Path HKLM:\\SOFTWARE\\Contoso -Name X -Value 1\n", 262144/32)[:262144]
	obs := finishedFleet(5000, func(t *ntv1.NodeTask) {
		t.Spec.Script.Inline = &script
		last, _ := json.Marshal(t)
		t.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": string(last)}
	})
	p := ComputePlan(obs)
	g.Expect(p.Problem).NotTo(BeNil())
	g.Expect(p.Problem.Reason).To(Equal(ntv1.ReasonStatusTooLarge))
	g.Expect(p.Problem.Message).To(ContainSubstring("configMapKeyRef"))
	g.Expect(p.Create).To(BeEmpty(), "no node starts")
	g.Expect(p.Delete).To(BeEmpty(), "no pod, the only other record of a result, is deleted")
	st := settleWith(obs, p)
	size := storedSize(g, obs.Task, st)
	t.Logf("5000 nodes with 43-character names and a 256 KiB inline script applied with kubectl apply: %d bytes", size)
	g.Expect(size).To(BeNumerically("<", hardObjectBytes), "the status write itself still succeeds")
	g.Expect(st.Nodes).To(HaveLen(5000), "no entry is dropped")
	stalled := findCondition(&st, ntv1.ConditionStalled)
	g.Expect(stalled.Status).To(Equal(metav1.ConditionTrue))
	g.Expect(stalled.Reason).To(Equal(ntv1.ReasonStatusTooLarge))
}

// settleWith stores the status of a plan already computed, as the controller's write would.
func settleWith(obs *Observed, p *Plan) ntv1.NodeTaskStatus {
	var started []StartedAttempt
	for _, r := range p.Create {
		started = append(started, StartedAttempt{PodRequest: r, At: obs.Now})
	}
	obs.Task.Status = ComputeStatus(obs, p, Outcome{Started: started})
	return obs.Task.Status
}

func TestEntryJSONLen(t *testing.T) {
	g := NewWithT(t)
	at := metav1.NewTime(time.Date(2026, 11, 26, 12, 0, 0, 123, time.FixedZone("CET", 3600)))
	for _, e := range []ntv1.NodeStatus{
		{Name: "akswin000001", Phase: ntv1.NodePending},
		{Name: eksName(70000), Phase: ntv1.NodeSucceeded, Attempts: 1, StartTime: &at, FinishTime: &at},
		{Name: "win-a", Phase: ntv1.NodeFailed, Run: 12345678901, Attempts: 11, ExitCode: ptr.To[int32](-1073741510),
			Reason: ntv1.NodeReasonTimeout, Output: "line 1\r\n\"quoted\" <b>\u2028 é", StartTime: &at, FinishTime: &at},
		{Name: "win-b", Phase: ntv1.NodeSucceeded, Attempts: 1, ExitCode: ptr.To[int32](3010), Reason: ntv1.NodeReasonRebooted,
			BootIDBefore: "17", BootIDAfter: "18", StartTime: &at, FinishTime: &at},
	} {
		b, err := json.Marshal(&e)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(entryJSONLen(&e, true)).To(Equal(len(b)), string(b))
		withoutOutput := e
		withoutOutput.Output = ""
		b, err = json.Marshal(&withoutOutput)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(entryJSONLen(&e, false)).To(Equal(len(b)), string(b))
	}
	task, st := bigStatus(50, func(i int) string { return fmt.Sprintf("akswin%06d", i) })
	g.Expect(ObjectSize(task, &st)).To(Equal(storedSize(g, task, st)))
}
