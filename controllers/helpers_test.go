package controllers

import (
	corev1 "k8s.io/api/core/v1"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/internal/testutil"
)

// The table tests' builders, shared with the decision package's tests (internal/testutil).

var t0 = testutil.T0

func newTask(mutate ...func(*ntv1.NodeTask)) *ntv1.NodeTask { return testutil.NewTask(mutate...) }

func deadlineExceeded(p *corev1.Pod) { testutil.DeadlineExceeded(p) }

func readYAML[T any](path string) T { return testutil.ReadYAML[T](path) }
