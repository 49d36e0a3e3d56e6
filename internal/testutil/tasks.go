package testutil

import (
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// T0 is the fixed clock of the table tests.
var T0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// NewTask returns the table tests' task, as the API server would have defaulted it, changed
// by the mutators in order.
func NewTask(mutate ...func(*ntv1.NodeTask)) *ntv1.NodeTask {
	task := &ntv1.NodeTask{
		ObjectMeta: metav1.ObjectMeta{Name: "patch", Namespace: "ops", UID: "task-uid", Generation: 1},
		Spec: ntv1.NodeTaskSpec{
			Script:         &ntv1.ScriptSpec{Inline: ptr.To("Write-Output hi"), Interpreter: ntv1.InterpreterPowerShell},
			RunAsUserName:  ntv1.DefaultRunAsUserName,
			TimeoutSeconds: ptr.To[int32](ntv1.DefaultTimeoutSeconds),
			Retries:        ptr.To[int32](0),
			Rollout: ntv1.RolloutSpec{
				MaxConcurrent: ptr.To(intstr.FromString("100%")),
				MaxFailures:   ptr.To(intstr.FromInt32(0)),
			},
			NewNodes: ntv1.NewNodesRun,
		},
	}
	for _, m := range mutate {
		m(task)
	}
	return task
}

// DeadlineExceeded plays the kubelet ending a pod at spec.activeDeadlineSeconds.
func DeadlineExceeded(p *corev1.Pod) {
	p.Status.Phase = corev1.PodFailed
	p.Status.Reason = "DeadlineExceeded"
	p.Status.Message = "Pod was active on the node longer than the specified deadline"
}

// ReadYAML reads a YAML file of the repository (path from its root) into a T.
func ReadYAML[T any](path string) T {
	var out T
	data, err := os.ReadFile(filepath.Join(repoRoot(), path))
	Expect(err).NotTo(HaveOccurred())
	Expect(yaml.Unmarshal(data, &out)).To(Succeed())
	return out
}

// repoRoot is the folder of go.mod, above the test's working directory.
func repoRoot() string {
	dir, err := os.Getwd()
	Expect(err).NotTo(HaveOccurred())
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		Expect(parent).NotTo(Equal(dir), "no go.mod above the test's folder")
		dir = parent
	}
}
