package v1alpha1_test

import (
	"os/exec"
	"strings"
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

func validSchedule(name string) *ntv1.NodeTaskSchedule {
	return &ntv1.NodeTaskSchedule{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: ntv1.NodeTaskScheduleSpec{
			Schedule: "30 3 * * 6",
			TimeZone: ptr.To("Europe/Berlin"),
			Template: ntv1.NodeTaskTemplate{Spec: validTask(name).Spec},
		},
	}
}

// invalidScheduleCases are the schedule's own rules (the template's are invalidCases).
var invalidScheduleCases = []struct {
	name    string
	mutate  func(*ntv1.NodeTaskSchedule)
	message string
}{
	{"a name too long for its runs' names", func(s *ntv1.NodeTaskSchedule) {
		s.Name = strings.Repeat("n", ntv1.MaxScheduleNameLength+1)
	}, "a NodeTaskSchedule's name must be at most 52 characters"},
	{"a time zone inside the schedule", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Schedule = "CRON_TZ=Europe/Berlin 30 3 * * 6"
	}, "schedule must not set CRON_TZ or TZ: use spec.timeZone"},
	{"@every", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Schedule = "@every 1h"
	}, "schedule must not use @every"},
	{"four cron fields", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Schedule = "30 3 * *"
	}, "schedule must be five cron fields separated by spaces"},
	{"six cron fields (seconds)", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Schedule = "0 30 3 * * 6"
	}, "schedule must be five cron fields separated by spaces"},
	{"an unknown @-name", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Schedule = "@fortnightly"
	}, "schedule must be five cron fields separated by spaces"},
	{"a suspended template", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Template.Spec.Suspend = true
	}, "template.spec.suspend would create runs that never start"},
	{"an approval in the template", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Template.Spec.Rollout.FirstBatch = ptr.To(intstr.FromInt32(1))
		s.Spec.Template.Spec.Rollout.PauseAfterFirstBatch = true
		s.Spec.Template.Spec.Rollout.ApprovedRun = 1
	}, "template.spec.rollout.approvedRun would approve every run of the schedule"},
	{"a reserved template label", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Template.Metadata.Labels = map[string]string{"nodetask.io/schedule": "other"}
	}, "template.metadata.labels must not use the nodetask.io/ prefix"},
	{"a reserved template annotation", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Template.Metadata.Annotations = map[string]string{"nodetask.io/scheduled-time": "x"}
	}, "template.metadata.annotations must not use the nodetask.io/ prefix"},
	{"an unknown concurrency policy", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.ConcurrencyPolicy = "Allow"
	}, `supported values: "Forbid", "Replace"`},
	{"a history limit above 100", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.SuccessfulRunsHistoryLimit = ptr.To[int32](101)
	}, "successfulRunsHistoryLimit"},
	{"an empty schedule", func(s *ntv1.NodeTaskSchedule) {
		s.Spec.Schedule = ""
	}, "spec.schedule"},
}

// TestEveryScheduleRuleIsTested: each CEL rule of the NodeTaskSchedule CRD has a case,
// here or (for the template's NodeTask rules) in invalidCases.
func TestEveryScheduleRuleIsTested(t *testing.T) {
	messages := celMessages(t, "nodetask.io_nodetaskschedules.yaml")
	if len(messages) < 14 {
		t.Fatalf("found only %d CEL rules in the schedule CRD; the template lost the NodeTask rules?", len(messages))
	}
	for _, msg := range messages {
		tested := false
		for _, c := range invalidCases {
			tested = tested || strings.Contains(msg, c.message)
		}
		for _, c := range invalidScheduleCases {
			tested = tested || strings.Contains(msg, c.message)
		}
		if !tested {
			t.Errorf("no case expects the message of the rule %q", msg)
		}
	}
}

var _ = Describe("NodeTaskSchedule validation", func() {
	It("fills in the documented defaults, the template's as a NodeTask's", func() {
		s := validSchedule("defaults")
		Expect(k8sClient.Create(ctx, s)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, s)
		got := &ntv1.NodeTaskSchedule{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s), got)).To(Succeed())
		Expect(got.Spec.ConcurrencyPolicy).To(Equal(ntv1.ConcurrencyForbid))
		Expect(got.Spec.SuccessfulRunsHistoryLimit).To(Equal(ptr.To[int32](3)))
		Expect(got.Spec.FailedRunsHistoryLimit).To(Equal(ptr.To[int32](1)))
		Expect(got.Spec.Template.Spec.RunAsUserName).To(Equal(ntv1.DefaultRunAsUserName))
		Expect(got.Spec.Template.Spec.TimeoutSeconds).To(Equal(ptr.To[int32](600)))
		Expect(got.Spec.Template.Spec.Reboot).To(Equal(ntv1.RebootNever))
	})

	It("accepts an Audit template and fills in its check's defaults", func() {
		s := validSchedule("audit")
		auditTemplate := validTask("audit")
		auditOnly(auditTemplate)
		s.Spec.Template.Spec = auditTemplate.Spec
		Expect(k8sClient.Create(ctx, s)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, s)
		got := &ntv1.NodeTaskSchedule{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s), got)).To(Succeed())
		Expect(got.Spec.Template.Spec.Mode).To(Equal(ntv1.ModeAudit))
		Expect(got.Spec.Template.Spec.Script).To(BeNil())
		Expect(got.Spec.Template.Spec.Check.Interpreter).To(Equal(ntv1.InterpreterPowerShell))
		Expect(got.Spec.Template.Spec.Check.NonCompliantExitCode).To(HaveValue(BeEquivalentTo(1)))
	})

	It("defaults the template's mode to Apply", func() {
		s := validSchedule("apply-check")
		s.Spec.Template.Spec.Check = validCheck()
		Expect(k8sClient.Create(ctx, s)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, s)
		got := &ntv1.NodeTaskSchedule{}
		Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(s), got)).To(Succeed())
		Expect(got.Spec.Template.Spec.Mode).To(Equal(ntv1.ModeApply))
	})

	It("accepts the longest name and the @-names", func() {
		s := validSchedule(strings.Repeat("n", ntv1.MaxScheduleNameLength))
		s.Spec.Schedule = "@weekly"
		Expect(k8sClient.Create(ctx, s)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, s)
	})

	It("shows its columns and explains its fields", func() {
		kubectl, err := exec.LookPath("kubectl")
		if err != nil {
			Skip("kubectl is not installed")
		}
		kubeconfig := writeKubeconfig()
		out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "explain", "nodetaskschedule.spec.concurrencyPolicy").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(ContainSubstring("Forbid (the default)"))
		s := validSchedule("columns")
		Expect(k8sClient.Create(ctx, s)).To(Succeed())
		DeferCleanup(k8sClient.Delete, ctx, s)
		out, err = exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "nts", "-n", "default", "columns").CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		Expect(string(out)).To(MatchRegexp(`NAME\s+SCHEDULE\s+TIMEZONE\s+SUSPEND\s+ACTIVE\s+LAST SCHEDULE\s+LAST RESULT\s+NEXT\s+AGE`))
		Expect(string(out)).To(ContainSubstring("Europe/Berlin"))
	})

	DescribeTable("refuses a template a NodeTask would refuse, with the NodeTask's message",
		func(mutate func(*ntv1.NodeTask), message string) {
			task := validTask("template")
			mutate(task)
			s := validSchedule("invalid-template")
			s.Spec.Template.Spec = task.Spec
			err := k8sClient.Create(ctx, s)
			if err == nil {
				DeferCleanup(k8sClient.Delete, ctx, s)
			}
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(message))
			Expect(err.Error()).To(ContainSubstring("spec.template.spec"))
		},
		invalidEntries(),
	)

	DescribeTable("refuses invalid schedules with a clear message",
		func(mutate func(*ntv1.NodeTaskSchedule), message string) {
			s := validSchedule("invalid")
			mutate(s)
			err := k8sClient.Create(ctx, s)
			if err == nil {
				DeferCleanup(k8sClient.Delete, ctx, s)
			}
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want 422 Invalid, got %v", err)
			Expect(err.Error()).To(ContainSubstring(message))
		},
		scheduleEntries(),
	)
})

// TestEveryScheduleFieldIsDocumented: kubectl explain shows a description for each of the
// schedule's own fields (the template's NodeTask fields are checked for NodeTask, by
// TestEveryFieldIsDocumented).
func TestEveryScheduleFieldIsDocumented(t *testing.T) {
	checkDescriptions(t, "nodetask.io_nodetaskschedules.yaml", ".spec.template.spec")
}

func scheduleEntries() []TableEntry {
	entries := make([]TableEntry, len(invalidScheduleCases))
	for i, c := range invalidScheduleCases {
		entries[i] = Entry(c.name, c.mutate, c.message)
	}
	return entries
}
