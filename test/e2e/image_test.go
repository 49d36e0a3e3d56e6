package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
)

// The manager's image, built by `make image` without a container engine and run by podman
// the way the kubelet runs the Deployment of the install bundle: in-cluster configuration
// from the ServiceAccount's token, CA and namespace mounted at the usual place and
// KUBERNETES_SERVICE_HOST/PORT, the Deployment's arguments, a read-only root filesystem, no
// capabilities, no privilege escalation. Skipped where podman is not installed (.ci/run
// installs it from Debian).

const (
	// leaseName is the manager's leader election Lease (cmd/main.go).
	leaseName = "nodetask-operator.nodetask.io"
	// saMount is where the kubelet mounts a pod's ServiceAccount token, CA and namespace.
	saMount = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// podman runs a podman command with the flags this machine needs: runc (crun refuses the
// sandbox's hybrid cgroups) and rlimits within the current hard limits.
func podman(args ...string) (string, error) {
	out, err := exec.Command("podman", append([]string{"--runtime", "runc"}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// deploymentArgs returns the manager container's arguments in the Deployment of
// dist/install.yaml, as installBundle built it.
func deploymentArgs() []string {
	data, err := os.ReadFile(filepath.Join(root, "dist", "install.yaml"))
	Expect(err).NotTo(HaveOccurred())
	for _, doc := range strings.Split(string(data), "\n---\n") {
		var d appsv1.Deployment
		if yaml.Unmarshal([]byte(doc), &d) != nil || d.Kind != "Deployment" {
			continue
		}
		return d.Spec.Template.Spec.Containers[0].Args
	}
	Fail("dist/install.yaml has no Deployment")
	return nil
}

// withAddrs replaces the bind addresses of the Deployment's arguments: the containers share
// the host's network (to reach the API server on loopback), so each needs its own ports.
func withAddrs(args []string, probe, metrics string) []string {
	out := make([]string, 0, len(args))
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "--health-probe-bind-address="):
			a = "--health-probe-bind-address=" + probe
		case strings.HasPrefix(a, "--metrics-bind-address="):
			a = "--metrics-bind-address=" + metrics
		}
		out = append(out, a)
	}
	return out
}

// leaseHolder is the identity holding the manager's Lease, or "".
func leaseHolder() string {
	var lease coordinationv1.Lease
	if k8s.Get(ctx, client.ObjectKey{Namespace: systemNamespace, Name: leaseName}, &lease) != nil || lease.Spec.HolderIdentity == nil {
		return ""
	}
	return *lease.Spec.HolderIdentity
}

func readyz(addr string) bool {
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + addr + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

var _ = Describe("The manager's image", Ordered, func() {
	var (
		image, saDir string
		started      []string
	)

	// run starts the image as a container named name, with the Deployment's arguments.
	run := func(name, probe, metrics string) {
		apiHost, apiPort, ok := strings.Cut(strings.TrimPrefix(c.Config.Host, "https://"), ":")
		Expect(ok).To(BeTrue(), c.Config.Host)
		args := []string{"run", "--detach", "--name", name, "--hostname", name,
			"--network", "host", // the API server listens on the host's loopback
			"--read-only", "--read-only-tmpfs=false", // readOnlyRootFilesystem, and no writable /tmp either
			"--cap-drop", "ALL", "--security-opt", "no-new-privileges",
			"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
			"--env", "KUBERNETES_SERVICE_HOST=" + apiHost, "--env", "KUBERNETES_SERVICE_PORT=" + apiPort,
			"--volume", saDir + ":" + saMount + ":ro",
			image}
		out, err := podman(append(args, withAddrs(deploymentArgs(), probe, metrics)...)...)
		Expect(err).NotTo(HaveOccurred(), out)
		started = append(started, name)
	}
	logsOf := func(name string) string { out, _ := podman("logs", name); return out }

	BeforeAll(func() {
		if _, err := exec.LookPath("podman"); err != nil {
			Skip("podman is not installed: the image is not run here (apt-get install podman runc; .ci/run does in CI)")
		}
		archive := filepath.Join(c.WorkDir, "nodetask-operator_e2e.oci.tar")
		build := exec.Command("make", "-C", root, "image", "VERSION=e2e", "PLATFORMS=linux/"+runtime.GOARCH, "IMAGE_ARCHIVE="+archive)
		out, err := build.CombinedOutput()
		Expect(err).NotTo(HaveOccurred(), string(out))
		out2, err := podman("load", "--input", archive)
		Expect(err).NotTo(HaveOccurred(), out2)
		image = "ghcr.io/nodetask/nodetask-operator:e2e"

		// The ServiceAccount's projected volume, as the kubelet writes it.
		saDir = filepath.Join(c.WorkDir, "serviceaccount")
		Expect(os.MkdirAll(saDir, 0o755)).To(Succeed())
		for name, data := range map[string][]byte{
			"token":     []byte(serviceAccountToken(managerSA, time.Hour)),
			"ca.crt":    c.Config.CAData,
			"namespace": []byte(systemNamespace),
		} {
			Expect(os.WriteFile(filepath.Join(saDir, name), data, 0o644)).To(Succeed())
		}

		// The suite's manager lets go of the Lease (SIGTERM releases it) for the containers.
		manager.Stop(30 * time.Second)
		DeferCleanup(func() {
			for _, name := range started {
				_, _ = podman("rm", "--force", "--time", "5", name)
			}
			startManager()
		})
	})

	It("is a non-root image with the manager as its entrypoint and no shell", func() {
		out, err := podman("image", "inspect", image, "--format", "{{.User}}|{{json .Config.Entrypoint}}|{{.Os}}/{{.Architecture}}|{{.Size}}")
		Expect(err).NotTo(HaveOccurred(), out)
		fields := strings.Split(out, "|")
		Expect(fields[0]).To(Equal("65532:65532"), "numeric, so that runAsNonRoot can be checked")
		Expect(fields[1]).To(Equal(`["/manager"]`))
		Expect(fields[2]).To(Equal("linux/" + runtime.GOARCH))
		AddReportEntry("image", fmt.Sprintf("user %s, entrypoint %s, platform %s, size %s bytes", fields[0], fields[1], fields[2], fields[3]))
		out, err = podman("run", "--rm", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--entrypoint", "/bin/sh", image, "-c", "true")
		Expect(err).To(HaveOccurred(), "the image has a shell: %s", out)
	})

	It("runs with in-cluster configuration on a read-only root, leads, runs a task to Ready and serves metrics; a second replica waits, then takes over", func() {
		probeA, metricsA := freeAddr(), freeAddr()
		run("nodetask-a", probeA, metricsA)
		Eventually(func() bool { return readyz(probeA) }, 2*time.Minute).Should(BeTrue(), func() string { return logsOf("nodetask-a") })
		Eventually(leaseHolder).Should(HavePrefix("nodetask-a_"), "the container leads, with its hostname as its identity")

		ns := namespace(true)
		task := newTask(ns, "from-image", mainPool, func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
		})
		Eventually(conditionTrue(task, ntv1.ConditionReady)).Should(BeTrue(), func() string { return logsOf("nodetask-a") })

		reader := tokenOf("image-scraper", "nodetask-metrics-reader")
		var body string
		Eventually(func() int { code, b := scrapeAt(metricsA, reader); body = b; return code }).Should(Equal(http.StatusOK))
		Expect(body).To(ContainSubstring(fmt.Sprintf(`nodetask_condition{name="from-image",namespace=%q,status="True",type="Ready"} 1`, ns)))
		code, _ := scrapeAt(metricsA, "")
		Expect(code).To(Equal(http.StatusUnauthorized))

		// A second replica: ready (its probes pass), but not the leader while the first runs.
		probeB, metricsB := freeAddr(), freeAddr()
		run("nodetask-b", probeB, metricsB)
		Eventually(func() bool { return readyz(probeB) }, time.Minute).Should(BeTrue(), func() string { return logsOf("nodetask-b") })
		Consistently(leaseHolder, 5*time.Second).Should(HavePrefix("nodetask-a_"))

		// The first stops as the kubelet stops a pod (SIGTERM): it releases the Lease, and the
		// second leads and reconciles.
		out, err := podman("stop", "--time", "30", "nodetask-a")
		Expect(err).NotTo(HaveOccurred(), out)
		Eventually(leaseHolder, 30*time.Second).Should(HavePrefix("nodetask-b_"))
		again := newTask(ns, "after-failover", mainPool, func(t *ntv1.NodeTask) {
			t.Spec.Rollout.MaxConcurrent = ptr.To(intstr.FromString("100%"))
		})
		Eventually(conditionTrue(again, ntv1.ConditionReady)).Should(BeTrue(), func() string { return logsOf("nodetask-b") })
	})
})
