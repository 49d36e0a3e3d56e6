// Package e2e tests the operator end to end: the manager binary runs as its own process,
// with the flags it has in a cluster, against a local control plane whose Windows and Linux
// nodes are simulated by KWOK (test/kwok/windows-kubelet.yaml plays the kubelet).
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/test/cluster"
)

const (
	windowsNodes = 20
	linuxNodes   = 5
	// mainPool labels the suite's first 20 Windows nodes; tests that add nodes use their own pool.
	poolLabel = "e2e.nodetask.io/pool"
	mainPool  = "main"
)

var (
	ctx     context.Context
	cancel  context.CancelFunc
	c       *cluster.Cluster
	k8s     client.Client
	manager *cluster.Process
	root    string
)

func TestE2E(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "NodeTask end-to-end suite")
}

func env(name string) string {
	v := os.Getenv(name)
	Expect(v).NotTo(BeEmpty(), "%s is unset: run the suite with `make test-e2e`", name)
	return v
}

var _ = BeforeSuite(func() {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter)))
	SetDefaultEventuallyTimeout(60 * time.Second)
	SetDefaultEventuallyPollingInterval(200 * time.Millisecond)
	ctx, cancel = context.WithCancel(context.Background())
	var err error
	root, err = filepath.Abs(filepath.Join("..", ".."))
	Expect(err).NotTo(HaveOccurred())
	opts := cluster.Options{
		AssetsDir:  env("K8S_ASSETS"),
		KwokBinary: env("KWOK"),
		KwokConfig: filepath.Join(root, "test", "kwok", "windows-kubelet.yaml"),
		CRDDir:     filepath.Join(root, "config", "crd", "bases"),
		WorkDir:    filepath.Join(root, "bin", "e2e"),
		Log:        GinkgoWriter,
	}
	c, err = cluster.StartFresh(ctx, opts)
	Expect(err).NotTo(HaveOccurred())
	k8s = c.Client
	for i := range windowsNodes {
		Expect(c.AddNode(ctx, fmt.Sprintf("win-%04d", i), "windows", map[string]string{poolLabel: mainPool})).To(Succeed())
	}
	for i := range linuxNodes {
		Expect(c.AddNode(ctx, fmt.Sprintf("linux-%04d", i), "linux", map[string]string{poolLabel: mainPool})).To(Succeed())
	}
	Expect(c.WaitNodesReady(ctx, windowsNodes+linuxNodes, 2*time.Minute)).To(Succeed())
	installBundle()
	managerConfig = managerKubeconfig()
	startManager()
})

var _ = AfterSuite(func() {
	if c != nil {
		Expect(c.Stop()).To(Succeed())
	}
	cancel()
})

// startManager runs the manager binary the way the Deployment in config/manager does.
func startManager() {
	if probeAddr == "" {
		// Free ports on loopback for the manager's health probes and metrics, kept across restarts.
		probeAddr, metricsAddr = freeAddr(), freeAddr()
	}
	var err error
	manager, err = c.StartProcess("manager", env("MANAGER"),
		// The ServiceAccount of the install bundle: the shipped RBAC, not an administrator's.
		"--kubeconfig="+managerConfig,
		"--leader-elect", "--leader-election-namespace="+systemNamespace,
		"--metrics-bind-address="+metricsAddr, "--health-probe-bind-address="+probeAddr)
	Expect(err).NotTo(HaveOccurred())
}

// probeAddr is where the manager serves /healthz and /readyz; metricsAddr, /metrics (HTTPS).
var probeAddr, metricsAddr string

func freeAddr() string {
	addr, err := cluster.FreeAddr()
	Expect(err).NotTo(HaveOccurred())
	return addr
}

// managerConfig is the kubeconfig the manager runs with (managerKubeconfig).
var managerConfig string

// killManager ends the manager with SIGKILL: no clean shutdown, the lease is not released.
func killManager() {
	Expect(manager.Signal(syscall.SIGKILL)).To(Succeed())
	Expect(manager.Wait(10 * time.Second)).To(Succeed())
}

// On failure, show what a person would look at: the manager's log, the events, the status.
var _ = ReportAfterEach(func(report SpecReport) {
	if !report.Failed() || c == nil {
		return
	}
	if log, err := os.ReadFile(filepath.Join(c.WorkDir, "manager.log")); err == nil {
		lines := strings.Split(string(log), "\n")
		AddReportEntry("manager log (last 80 lines)", strings.Join(lines[max(0, len(lines)-80):], "\n"))
	}
	var tasks ntv1.NodeTaskList
	if k8s.List(ctx, &tasks) == nil {
		for _, t := range tasks.Items {
			b, _ := yaml.Marshal(t.Status)
			AddReportEntry("status of "+t.Namespace+"/"+t.Name, string(b))
		}
	}
	if out, err := exec.Command("kubectl", "--kubeconfig", c.Kubeconfig, "get", "events", "-A", "--sort-by=.lastTimestamp").CombinedOutput(); err == nil {
		AddReportEntry("events", string(out))
	}
})
