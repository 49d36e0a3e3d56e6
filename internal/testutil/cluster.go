package testutil

import (
	"context"

	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Helpers for the specs that run against an API server (envtest and e2e).

// FetchTask reads the task as the API server has it now; the spec fails if it cannot.
func FetchTask(ctx context.Context, c client.Reader, task *ntv1.NodeTask) *ntv1.NodeTask {
	out := &ntv1.NodeTask{}
	ExpectWithOffset(1, c.Get(ctx, client.ObjectKeyFromObject(task), out)).To(Succeed())
	return out
}

// StoredEntry returns the node's entry in the task's stored status, or an empty entry if it
// has none.
func StoredEntry(ctx context.Context, c client.Reader, task *ntv1.NodeTask, node string) ntv1.NodeStatus {
	if e := FetchTask(ctx, c, task).Status.Node(node); e != nil {
		return *e
	}
	return ntv1.NodeStatus{}
}
