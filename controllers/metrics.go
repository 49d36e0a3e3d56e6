package controllers

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Metrics of the controller's own writes, served with controller-runtime's on /metrics.
var (
	statusWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodetask_status_writes_total",
		Help: "Status writes of NodeTasks that the API server accepted.",
	})
	statusWriteBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "nodetask_status_write_bytes_total",
		Help: "Bytes of the NodeTasks whose status writes the API server accepted (each write sends the whole object to etcd and to every watcher).",
	})
	registerOnce sync.Once
)

func registerMetrics() {
	registerOnce.Do(func() { metrics.Registry.MustRegister(statusWrites, statusWriteBytes) })
}

// recordStatusWrite counts one accepted status write and the size of the object written.
func recordStatusWrite(task *ntv1.NodeTask) {
	statusWrites.Inc()
	statusWriteBytes.Add(float64(objectSize(task, &task.Status)))
}
