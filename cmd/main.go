// Command manager runs the NodeTask operator.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"net/http"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	ntv1 "github.com/nodetask/nodetask-operator/api/v1alpha1"
	"github.com/nodetask/nodetask-operator/controllers"
	"github.com/nodetask/nodetask-operator/controllers/rollout"
)

// metricsFilter authenticates and authorizes scrapes when metrics are served over HTTPS.
func metricsFilter(secure bool) func(*rest.Config, *http.Client) (metricsserver.Filter, error) {
	if !secure {
		return nil
	}
	return filters.WithAuthenticationAndAuthorization
}

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// version is the release the manager was built as (-ldflags "-X main.version=v0.1.0", as
// hack/image and make release do); "dev" for a local build.
var version = "dev"

func main() {
	var (
		metricsAddr, probeAddr, pprofAddr, defaultImage, leaseNamespace, clusterKinds string
		leaderElect, metricsSecure                                                    bool
		qps                                                                           float64
		burst, reconciles, createWorkers, inlineResults                               int
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8443", "Address the Prometheus metrics endpoint binds to; 0 disables it.")
	flag.BoolVar(&metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS, to clients whose token may get /metrics (ClusterRole nodetask-metrics-reader); false serves plain HTTP, for local runs.")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "Address the health and readiness probes bind to.")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "",
		"Address of Go's pprof endpoints (/debug/pprof/); empty disables them. Unauthenticated: bind it to loopback only.")
	flag.BoolVar(&leaderElect, "leader-elect", false, "Elect a leader, so that only one of several replicas acts.")
	flag.StringVar(&leaseNamespace, "leader-election-namespace", "",
		"Namespace of the leader election Lease; empty means the pod's own namespace (in-cluster only).")
	flag.StringVar(&defaultImage, "default-script-image", ntv1.DefaultScriptImage,
		"Image of script pods whose NodeTask names none; point it at a mirror when nodes cannot pull from mcr.microsoft.com.")
	// Client-side rate limits, not the API server, decide how fast pods fan out: client-go's
	// default of 5 QPS would take over 16 minutes to create 5000 pods.
	flag.Float64Var(&qps, "kube-api-qps", 200, "Queries per second to the API server.")
	flag.IntVar(&burst, "kube-api-burst", 400, "Burst of queries to the API server.")
	flag.IntVar(&reconciles, "max-concurrent-reconciles", 4, "NodeTasks reconciled at once.")
	flag.IntVar(&createWorkers, "pod-create-workers", 16, "Pods one reconcile creates in parallel.")
	flag.IntVar(&inlineResults, "status-inline-results", rollout.DefaultInlineResults, "How many per-node results a NodeTask's status.nodes holds; a task with more keeps them in NodeResultSlices (status.resultSlices), so that its own status stays small.")
	flag.StringVar(&clusterKinds, "health-check-cluster-kinds", "",
		"Kinds (Kind.group, comma-separated, e.g. Deployment.apps,Node) that a NodeTask's rollout.healthChecks may read outside "+
			"the task's namespace or cluster-scoped. Empty: only objects in the task's own namespace. Secrets never.")
	opts := zap.Options{Development: false}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	setupLog := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(ntv1.AddToScheme(scheme))

	cfg := ctrl.GetConfigOrDie()
	cfg.QPS, cfg.Burst = float32(qps), burst
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Metrics: metricsserver.Options{
			BindAddress:   metricsAddr,
			SecureServing: metricsSecure,
			// Each scrape's token is checked with a TokenReview and a SubjectAccessReview
			// (the manager's role may create both), as kubebuilder v4 scaffolds it.
			FilterProvider: metricsFilter(metricsSecure),
			// HTTP/2 stays off: it was the vector of the "rapid reset" CVEs.
			TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }},
		},
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          leaderElect,
		LeaderElectionID:        "nodetask-operator.nodetask.io",
		LeaderElectionNamespace: leaseNamespace,
		// Hand the lease over at once on a clean shutdown, so that a restart resumes quickly.
		LeaderElectionReleaseOnCancel: true,
		// Running reconciles get this long to finish on SIGTERM; the Deployment's
		// terminationGracePeriodSeconds (30) must stay above it.
		GracefulShutdownTimeout: ptr.To(controllers.GracefulShutdownTimeout),
		Cache:                   controllers.CacheOptions(),
		Client:                  client.Options{Cache: &client.CacheOptions{DisableFor: controllers.UncachedObjects}},
	})
	if err != nil {
		setupLog.Error(err, "unable to create manager")
		os.Exit(1)
	}
	kinds, err := controllers.ParseClusterKinds(clusterKinds)
	if err != nil {
		setupLog.Error(err, "invalid --health-check-cluster-kinds")
		os.Exit(1)
	}
	r := &controllers.NodeTaskReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Health:                  &controllers.HealthChecks{Reader: mgr.GetAPIReader(), Mapper: mgr.GetRESTMapper(), ClusterKinds: kinds},
		Recorder:                mgr.GetEventRecorder("nodetask-controller"),
		Pods:                    rollout.PodBuilder{DefaultScriptImage: defaultImage},
		CreateWorkers:           createWorkers,
		InlineResults:           inlineResults,
		MaxConcurrentReconciles: reconciles,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "unable to set up the NodeTask controller")
		os.Exit(1)
	}
	sr := &controllers.NodeTaskScheduleReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("nodetaskschedule-controller"),
	}
	if err := sr.SetupWithManager(mgr); err != nil {
		setupLog.Error(err, "unable to set up the NodeTaskSchedule controller")
		os.Exit(1)
	}
	utilruntime.Must(mgr.AddHealthzCheck("healthz", healthz.Ping))
	// Ready once the caches have synced: before that the manager has not seen the pods it
	// made, and a rolling update would hand over to a replica that cannot act yet.
	utilruntime.Must(mgr.AddReadyzCheck("readyz", func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), time.Second)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("caches have not synced yet")
		}
		return nil
	}))

	setupLog.Info("starting manager", "version", version, "qps", qps, "burst", burst, "maxConcurrentReconciles", reconciles)
	if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
		setupLog.Error(err, "manager stopped with an error")
		os.Exit(1)
	}
}
