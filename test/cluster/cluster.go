// Package cluster starts a local Kubernetes control plane with simulated Windows and Linux
// nodes: etcd and kube-apiserver (through envtest), kube-controller-manager for garbage
// collection, and KWOK playing the kubelets. The end-to-end suite and `make demo` use it.
// Everything it starts is stopped by Stop, and dies with the calling process.
package cluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// Labels and annotations of the simulated nodes.
const (
	// KwokNodeAnnotation marks the nodes KWOK manages.
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
	// WindowsBuildLabel is the label Windows nodes carry with their OS build.
	WindowsBuildLabel = "node.kubernetes.io/windows-build"
	// WindowsBuild is the build the simulated nodes report: Windows Server 2022.
	WindowsBuild = "10.0.20348"
)

// Options configure a cluster.
type Options struct {
	// AssetsDir holds kube-apiserver, etcd and kube-controller-manager (hack/setup-envtest.sh).
	AssetsDir string
	// KwokBinary is the kwok executable.
	KwokBinary string
	// KwokConfig is the KWOK configuration with the Windows kubelet stages.
	KwokConfig string
	// CRDDir holds the CRDs to install.
	CRDDir string
	// WorkDir receives the kubeconfig and the components' logs.
	WorkDir string
	// WindowsNodes and LinuxNodes are how many nodes of each to create.
	WindowsNodes, LinuxNodes int
	// TaintWindows gives Windows nodes the common os=windows:NoSchedule taint.
	TaintWindows bool
	// ExtraControllers are more kube-controller-manager controllers to run (daemonset...).
	ExtraControllers []string
	// Scheduler, if set, is a kube-scheduler binary to run (for DaemonSet pods), at its
	// default client limits.
	Scheduler string
	// DefaultClientLimits runs kube-controller-manager at its default client-side limits
	// (20 QPS) instead of the 200 the tests use.
	DefaultClientLimits bool
	// Log receives progress lines; nil discards them.
	Log io.Writer
}

// AddFlags registers the flags that locate the cluster's parts (run from the repository's
// root, as the Makefile does), with workDir as the default of --work-dir. The demo, the Argo
// CD testdata generator and the fan-out benchmark share them.
func (o *Options) AddFlags(fs *flag.FlagSet, workDir string) {
	fs.StringVar(&o.AssetsDir, "assets", "bin/k8s/1.37.2", "Folder with kube-apiserver, etcd and kube-controller-manager (and kube-scheduler for the benchmark).")
	fs.StringVar(&o.KwokBinary, "kwok", "bin/kwok-v0.8.0", "The kwok binary.")
	fs.StringVar(&o.KwokConfig, "kwok-config", "test/kwok/windows-kubelet.yaml", "KWOK stages that play a Windows kubelet.")
	fs.StringVar(&o.CRDDir, "crds", "config/crd/bases", "Folder with the CRDs.")
	fs.StringVar(&o.WorkDir, "work-dir", workDir, "Folder for the kubeconfig and the logs.")
}

// Cluster is a running local cluster.
type Cluster struct {
	// Config and Client reach the API server as a cluster admin.
	Config *rest.Config
	Client client.Client
	// Kubeconfig is the path of an admin kubeconfig file.
	Kubeconfig string
	// WorkDir holds the kubeconfig and the logs.
	WorkDir string

	opts      Options
	env       *envtest.Environment
	hosts     *hosts
	stopHosts context.CancelFunc
	mu        sync.Mutex
	procs     []*Process
	stopOnce  sync.Once
}

// Start starts the control plane, kube-controller-manager and KWOK, and creates the nodes.
// On error, whatever was started is stopped.
func Start(ctx context.Context, opts Options) (c *Cluster, err error) {
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if err := os.MkdirAll(opts.WorkDir, 0o755); err != nil {
		return nil, err
	}
	c = &Cluster{opts: opts, WorkDir: opts.WorkDir}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()

	c.logf("starting etcd and kube-apiserver")
	c.env = &envtest.Environment{
		BinaryAssetsDirectory: opts.AssetsDir,
		CRDDirectoryPaths:     []string{opts.CRDDir},
		ErrorIfCRDPathMissing: true,
	}
	// The simulated nodes' only address a kubelet call can reach is their InternalIP.
	c.env.ControlPlane.GetAPIServer().Configure().Set("kubelet-preferred-address-types", "InternalIP")
	if c.Config, err = c.env.Start(); err != nil {
		return c, fmt.Errorf("starting the control plane: %w", err)
	}
	user, err := c.env.ControlPlane.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return c, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return c, err
	}
	c.Kubeconfig = filepath.Join(opts.WorkDir, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, kubeconfig, 0o600); err != nil {
		return c, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return c, err
	}
	if err := ntv1.AddToScheme(scheme); err != nil {
		return c, err
	}
	if c.Client, err = client.New(c.Config, client.Options{Scheme: scheme}); err != nil {
		return c, err
	}

	c.logf("starting kube-controller-manager (garbage collector, pod garbage collector, disruption, deployment, replicaset, clusterrole aggregation)")
	kcmArgs := []string{"--kubeconfig", c.Kubeconfig,
		// disruption keeps PodDisruptionBudgets' status, which the Eviction API reads.
		// deployment and replicaset make the pods of an installed Deployment, so that Pod
		// Security admission judges them (no scheduler runs: they stay Pending).
		// clusterrole-aggregation fills aggregated ClusterRoles (the health-check reader role).
		"--controllers=" + strings.Join(append([]string{"garbagecollector", "podgc", "disruption", "deployment", "replicaset",
			"clusterrole-aggregation"}, opts.ExtraControllers...), ","),
		"--leader-elect=false",
		"--secure-port=0",
		"--use-service-account-credentials=false",
	}
	if !opts.DefaultClientLimits {
		// The garbage collector deletes the pods of deleted tasks; at 500 nodes kcm's
		// default 20 QPS would make the tests wait for it.
		kcmArgs = append(kcmArgs, "--kube-api-qps=200", "--kube-api-burst=400")
	}
	if _, err := c.StartProcess("kube-controller-manager", filepath.Join(opts.AssetsDir, "kube-controller-manager"), kcmArgs...); err != nil {
		return c, err
	}

	if opts.Scheduler != "" {
		c.logf("starting kube-scheduler")
		if _, err := c.StartProcess("kube-scheduler", opts.Scheduler,
			"--kubeconfig", c.Kubeconfig, "--leader-elect=false", "--secure-port=0"); err != nil {
			return c, err
		}
	}

	c.logf("starting kwok to play the kubelets")
	logsConfig, err := c.writeContainerLogs()
	if err != nil {
		return c, err
	}
	// kwok's server plays the kubelets' API too: nodes report it as their kubelet endpoint
	// (127.0.0.1 and its port), so that the API server's pods/log reaches it.
	kwokAddr, err := FreeAddr()
	if err != nil {
		return c, err
	}
	_, kwokPort, _ := net.SplitHostPort(kwokAddr)
	if _, err := c.StartProcess("kwok", opts.KwokBinary,
		"--kubeconfig", c.Kubeconfig,
		"--config", opts.KwokConfig,
		"--config", logsConfig,
		"--manage-all-nodes=false",
		"--manage-nodes-with-annotation-selector", KwokNodeAnnotation+"=fake",
		"--server-address", kwokAddr,
		"--node-ip", "127.0.0.1",
		"--node-port", kwokPort,
	); err != nil {
		return c, err
	}

	c.logf("starting the host simulation (node restarts)")
	hostCtx, stopHosts := context.WithCancel(context.Background())
	c.stopHosts = stopHosts
	if err := c.startHosts(hostCtx); err != nil {
		return c, err
	}

	c.logf("creating %d Windows and %d Linux nodes", opts.WindowsNodes, opts.LinuxNodes)
	for i := range opts.WindowsNodes {
		if err := c.AddNode(ctx, fmt.Sprintf("win-%04d", i), "windows", nil); err != nil {
			return c, err
		}
	}
	for i := range opts.LinuxNodes {
		if err := c.AddNode(ctx, fmt.Sprintf("linux-%04d", i), "linux", nil); err != nil {
			return c, err
		}
	}
	if err := c.WaitNodesReady(ctx, opts.WindowsNodes+opts.LinuxNodes, 2*time.Minute); err != nil {
		return c, err
	}
	c.logf("cluster ready; kubeconfig: %s", c.Kubeconfig)
	return c, nil
}

// AddNode creates a KWOK-managed node of the given OS, with extra labels.
func (c *Cluster) AddNode(ctx context.Context, name, os string, labels map[string]string) error {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:        name,
		Annotations: map[string]string{KwokNodeAnnotation: "fake"},
		Labels: map[string]string{
			corev1.LabelOSStable:   os,
			corev1.LabelArchStable: "amd64",
			corev1.LabelHostname:   name,
			"type":                 "kwok",
		},
	}}
	for k, v := range labels {
		node.Labels[k] = v
	}
	if os == "windows" {
		node.Labels[WindowsBuildLabel] = WindowsBuild
		if c.opts.TaintWindows {
			node.Spec.Taints = []corev1.Taint{{Key: "os", Value: "windows", Effect: corev1.TaintEffectNoSchedule}}
		}
	}
	if err := c.Client.Create(ctx, node); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	return nil
}

// WaitNodesReady waits until at least n nodes report Ready.
func (c *Cluster) WaitNodesReady(ctx context.Context, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var nodes corev1.NodeList
		if err := c.Client.List(ctx, &nodes); err != nil {
			return err
		}
		ready := 0
		for _, node := range nodes.Items {
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes Ready after %s; see %s", ready, n, timeout, filepath.Join(c.WorkDir, "kwok.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Process is a component started by the cluster.
type Process struct {
	// Name names the component; its output goes to WorkDir/Name.log.
	Name string
	// LogPath is the file that holds its output.
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// ContainerLog is what every simulated container's log holds (`kubectl logs` through the
// API server and kwok's server): the simulation runs no script, so it has no real output.
const ContainerLog = "simulated HostProcess container log (served by kwok; a real node streams the script's output here)"

// writeContainerLogs writes the log every simulated container shows, in the CRI log format
// kubelets read, and a kwok ClusterLogs configuration that serves it for every pod.
func (c *Cluster) writeContainerLogs() (string, error) {
	logFile, err := filepath.Abs(filepath.Join(c.WorkDir, "container.log"))
	if err != nil {
		return "", err
	}
	line := time.Now().UTC().Format(time.RFC3339Nano) + " stdout F " + ContainerLog + "\n"
	if err := os.WriteFile(logFile, []byte(line), 0o644); err != nil {
		return "", err
	}
	config := filepath.Join(c.WorkDir, "kwok-logs.yaml")
	return config, os.WriteFile(config, []byte(`apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterLogs
metadata:
  name: every-container
spec:
  logs:
  - logsFile: `+strconv.Quote(logFile)+`
`), 0o644)
}

// StartProcess starts a component whose output goes to WorkDir/name.log. It is killed by
// Stop, and by the kernel if this process dies first.
func (c *Cluster) StartProcess(name, path string, args ...string) (*Process, error) {
	logPath := filepath.Join(c.WorkDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{Name: name, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
	return p, nil
}

// FreeAddr returns a loopback address with a port that was free a moment ago, for a
// component's listener.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Args returns the arguments the process was started with (without the program).
func (p *Process) Args() []string { return p.cmd.Args[1:] }

// Signal sends sig to the process's group.
func (p *Process) Signal(sig syscall.Signal) error {
	return syscall.Kill(-p.cmd.Process.Pid, sig)
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits for the process to end, at most timeout.
func (p *Process) Wait(timeout time.Duration) error {
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("%s still running after %s", p.Name, timeout)
	}
}

// Stop ends a process: SIGTERM, then SIGKILL after a grace period.
func (p *Process) Stop(grace time.Duration) {
	if p.Exited() {
		return
	}
	_ = p.Signal(syscall.SIGTERM)
	if p.Wait(grace) != nil {
		_ = p.Signal(syscall.SIGKILL)
		_ = p.Wait(10 * time.Second)
	}
}

// Stop stops every component, newest first, then the control plane. It is safe to call twice.
func (c *Cluster) Stop() error {
	var err error
	c.stopOnce.Do(func() {
		if c.stopHosts != nil {
			c.stopHosts()
		}
		c.mu.Lock()
		procs := c.procs
		c.mu.Unlock()
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].Stop(5 * time.Second)
		}
		if c.env != nil && c.Config != nil {
			err = c.env.Stop()
		}
	})
	return err
}

func (c *Cluster) logf(format string, args ...any) {
	fmt.Fprintf(c.opts.Log, "[cluster] "+format+"\n", args...)
}

// ErrMissingBinary tells which prerequisite is missing.
var ErrMissingBinary = errors.New("missing binary")

// StartFresh checks that the binaries exist, empties opts.WorkDir of an earlier run's files,
// and starts the cluster. On error, whatever was started is stopped; a non-nil cluster is
// returned whenever something may need stopping.
func StartFresh(ctx context.Context, opts Options) (*Cluster, error) {
	if err := CheckBinaries(opts); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(opts.WorkDir); err != nil {
		return nil, err
	}
	return Start(ctx, opts)
}

// CheckBinaries verifies that the binaries the cluster needs exist.
func CheckBinaries(opts Options) error {
	for _, p := range []string{
		filepath.Join(opts.AssetsDir, "kube-apiserver"), filepath.Join(opts.AssetsDir, "etcd"),
		filepath.Join(opts.AssetsDir, "kube-controller-manager"), opts.KwokBinary,
	} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w: %s (run `make setup-envtest kwok`)", ErrMissingBinary, p)
		}
	}
	return nil
}
