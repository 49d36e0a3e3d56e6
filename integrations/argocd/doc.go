// Package argocd holds the Argo CD health check of NodeTasks, laid out as Argo CD's own
// resource_customizations folder (health.lua, health_test.yaml, testdata), and its tests:
// the check run the way Argo CD runs it (gopher-lua with only the package, base and table
// libraries), and kstatus conformance over the same objects, which `make argocd-testdata`
// takes from tasks run on the simulated cluster.
package argocd
