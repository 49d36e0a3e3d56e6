# NodeTask operator. `make help` lists the targets.

# Image of the manager, for deploy and build-installer.
IMG ?= nodetask-operator:dev
# The manager image `make image` builds: repository, tag, platforms, and the OCI archive.
IMAGE_REPO ?= ghcr.io/nodetask/nodetask-operator
VERSION ?= dev
PLATFORMS ?= linux/amd64,linux/arm64
IMAGE_ARCHIVE ?= dist/nodetask-operator_$(VERSION).oci.tar
# podman or docker loads the built image into its store; empty: the archive only, no
# container engine needed.
CONTAINER_TOOL ?=
# Kubernetes version of the control-plane binaries used by envtest, e2e and the demo.
K8S_VERSION ?= 1.37.2

# Tool versions, pinned; each is installed into ./bin on first use.
CONTROLLER_TOOLS_VERSION ?= v0.23.0
KUSTOMIZE_VERSION ?= v5.8.1
KWOK_VERSION ?= v0.8.0
KREW_VERSION ?= v0.4.3

LOCALBIN ?= $(shell pwd)/bin
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(KUSTOMIZE_VERSION)
KWOK ?= $(LOCALBIN)/kwok-$(KWOK_VERSION)
KREW ?= $(LOCALBIN)/krew-$(KREW_VERSION)
K8S_ASSETS ?= $(LOCALBIN)/k8s/$(K8S_VERSION)

# Tests print Ginkgo's progress; -p=1 keeps the envtest suites off each other's cores.
GO_TEST_FLAGS ?= -count=1

SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Demo

KEEP ?=
.PHONY: demo
demo: setup-envtest kwok build plugin ## Run the operator on a simulated cluster (5 Windows, 2 Linux nodes) with a sample task. KEEP=1 leaves it running.
	go run ./hack/demo --assets "$(K8S_ASSETS)" --kwok "$(KWOK)" $(if $(KEEP),--keep)

.PHONY: demo-maintenance
demo-maintenance: setup-envtest kwok build plugin ## Patch the simulated Windows nodes one at a time: drain, run (exit 3010), restart, uncordon. KEEP=1 leaves it running.
	go run ./hack/demo --assets "$(K8S_ASSETS)" --kwok "$(KWOK)" --sample config/samples/nodetask_v1alpha1_maintenance.yaml \
		--simulate-exit-code 3010 --workloads 6 $(if $(KEEP),--keep)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and the RBAC ClusterRole from the markers in the code.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./..." output:crd:artifacts:config=config/crd/bases
	hack/sync-chart.sh

.PHONY: generate
generate: controller-gen ## Generate the DeepCopy methods of the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./..."

.PHONY: fmt
fmt: ## Run go fmt.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: verify-generated
verify-generated: controller-gen ## Fail if the generated CRD, RBAC or DeepCopy code is out of date.
	hack/verify-generated.sh "$(CONTROLLER_GEN)"

.PHONY: test
test: verify-generated vet setup-envtest ## Run the unit and envtest integration tests (the CI test command).
	KUBEBUILDER_ASSETS="$(K8S_ASSETS)" go test $(GO_TEST_FLAGS) $$(go list ./... | grep -v /test/e2e) -coverprofile cover.out

.PHONY: test-e2e
test-e2e: setup-envtest kwok kustomize build plugin ## Run the end-to-end suite: the manager as its own process against a simulated cluster (KWOK), and the kubectl plugin.
	K8S_ASSETS="$(K8S_ASSETS)" KWOK="$(KWOK)" KUSTOMIZE="$(KUSTOMIZE)" MANAGER="$(LOCALBIN)/manager" PLUGIN="$(LOCALBIN)/kubectl-nodetask" go test $(GO_TEST_FLAGS) -timeout 40m -v ./test/e2e/ -ginkgo.v

.PHONY: bench-fanout
bench-fanout: kwok build ## Fan-out benchmark on N (default 1000) simulated Windows nodes: bare client, DaemonSet, NodeTask; a table of ratios and CPU use. BENCH_ARGS="--rounds 5 --profile-dir bin/profiles" repeats and profiles. Not part of CI.
	K8S_EXTRA=kube-scheduler K8S_VERSION=$(K8S_VERSION) K8S_ASSETS="$(K8S_ASSETS)" hack/setup-envtest.sh >/dev/null
	go run ./hack/bench-fanout --assets "$(K8S_ASSETS)" --kwok "$(KWOK)" --nodes $(or $(N),1000) $(foreach a,$(MANAGER_ARGS),--manager-arg=$(a)) $(BENCH_ARGS)

.PHONY: bench-schedules
bench-schedules: setup-envtest kwok build ## Schedule benchmark: SCHEDULES (default 20) NodeTaskSchedules firing at the same minute over N (default 250) simulated Windows nodes; time until every run is Ready, manager memory, CPU and API requests. Not part of CI.
	go run ./hack/bench-fanout --assets "$(K8S_ASSETS)" --kwok "$(KWOK)" --work-dir bin/bench-schedules --nodes $(or $(N),250) --schedules $(or $(SCHEDULES),20) $(foreach a,$(MANAGER_ARGS),--manager-arg=$(a)) $(BENCH_ARGS)

.PHONY: argocd-testdata
argocd-testdata: setup-envtest kwok build ## Regenerate the Argo CD health check's testdata from tasks run on the simulated cluster.
	go run ./hack/argocd-testdata --assets "$(K8S_ASSETS)" --kwok "$(KWOK)"

.PHONY: test-argocd-testdata
test-argocd-testdata: setup-envtest kwok build ## Produce the Argo CD testdata afresh on the simulated cluster and check each state's health again.
	rm -rf bin/argocd-testdata-out && mkdir -p bin/argocd-testdata-out
	go run ./hack/argocd-testdata --assets "$(K8S_ASSETS)" --kwok "$(KWOK)" --out bin/argocd-testdata-out
	ARGOCD_TESTDATA="$(CURDIR)/bin/argocd-testdata-out" go test $(GO_TEST_FLAGS) ./integrations/argocd/ -run TestFreshTestdata -v

.PHONY: argocd-cm
argocd-cm: ## Write config/argocd/argocd-cm.yaml (the health check as an argocd-cm customization) from health.lua.
	hack/argocd-cm.sh > config/argocd/argocd-cm.yaml

.PHONY: bench
bench: ## Run the planner and status benchmarks at 1000 and 5000 nodes.
	go test -run '^$$' -bench . -benchmem ./controllers/rollout/

##@ Build

.PHONY: build
build: ## Build the manager binary into bin/manager.
	go build -o bin/manager ./cmd

.PHONY: plugin
plugin: ## Build the kubectl plugin into bin/kubectl-nodetask (put bin/ on PATH, then `kubectl nodetask --help`).
	go build -o bin/kubectl-nodetask ./cmd/kubectl-nodetask

.PHONY: plugin-dist
plugin-dist: ## Build the plugin's krew archives for VERSION (a semver tag) and its krew manifest into dist/plugin/.
	hack/plugin-dist.sh $(VERSION)

.PHONY: run
run: manifests generate ## Run the manager from your host against the cluster in your kubeconfig.
	go run ./cmd

.PHONY: image
image: ## Build the manager image for PLATFORMS without a container engine: an OCI archive (IMAGE_ARCHIVE) and its digest in IMAGE_ARCHIVE.digest; CONTAINER_TOOL=podman also loads it.
	go run ./hack/image --repo $(IMAGE_REPO) --version $(VERSION) --platforms $(PLATFORMS) --out $(IMAGE_ARCHIVE) > $(IMAGE_ARCHIVE).digest
	@echo "$(IMAGE_ARCHIVE) $(IMAGE_REPO):$(VERSION)@$$(cat $(IMAGE_ARCHIVE).digest)"
	$(if $(CONTAINER_TOOL),$(CONTAINER_TOOL) load --input $(IMAGE_ARCHIVE))

.PHONY: release
release: kustomize ## Build every artifact of release VERSION (a semver tag with a CHANGELOG.md section) into dist/release/VERSION: image archive and digest, install.yaml and chart pinned to the digest, plugin archives, krew manifest, SHA256SUMS.
	KUSTOMIZE="$(KUSTOMIZE)" IMAGE_REPO="$(IMAGE_REPO)" PLATFORMS="$(PLATFORMS)" hack/release.sh $(VERSION)

.PHONY: test-release
test-release: kustomize krew ## Build release v0.1.0 for this machine's platform only (fast) and check every artifact: checksums, image, install.yaml, chart, and krew installing the plugin (CI runs it).
	$(MAKE) --no-print-directory release VERSION=v0.1.0 PLATFORMS=linux/$(shell go env GOARCH) PLUGIN_PLATFORMS=linux/$(shell go env GOARCH)
	RELEASE_DIR="$(CURDIR)/dist/release/v0.1.0" IMAGE_REPO="$(IMAGE_REPO)" PLATFORMS=linux/$(shell go env GOARCH) \
		PLUGIN_PLATFORM=linux/$(shell go env GOARCH) KREW="$(KREW)" go test $(GO_TEST_FLAGS) -v ./test/release/

.PHONY: docker-build
docker-build: ## kubebuilder's name for `make image` loaded into CONTAINER_TOOL (default docker; podman works too).
	$(MAKE) image CONTAINER_TOOL=$(or $(CONTAINER_TOOL),docker)

##@ Deployment

.PHONY: install
install: manifests kustomize ## Install the CRD into the cluster in your kubeconfig.
	$(KUSTOMIZE) build config/crd | kubectl apply -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRD (and every NodeTask) from the cluster.
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: build-installer
build-installer: manifests kustomize ## Write dist/install.yaml (CRD, namespace, RBAC, manager Deployment with image IMG): one `kubectl apply -f` installs it.
	mkdir -p dist
	$(KUSTOMIZE) build config/default | sed -E 's|^( *image: ).*$$|\1$(IMG)|' > dist/install.yaml
	@echo "wrote dist/install.yaml with image $(IMG)"

.PHONY: helm-package
helm-package: manifests ## Package the Helm chart (charts/nodetask-operator) into dist/.
	go run ./hack/helm-package charts/nodetask-operator dist

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator with image IMG into the cluster.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | kubectl apply -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the operator from the cluster.
	$(KUSTOMIZE) build config/default | kubectl delete --ignore-not-found -f -

##@ Dependencies

.PHONY: setup-envtest
setup-envtest: ## Provide kube-apiserver, etcd and kube-controller-manager in bin/k8s (builds them offline if needed).
	K8S_VERSION=$(K8S_VERSION) K8S_ASSETS="$(K8S_ASSETS)" hack/setup-envtest.sh >/dev/null

.PHONY: controller-gen
controller-gen: $(CONTROLLER_GEN) ## Install controller-gen into bin/.
$(CONTROLLER_GEN):
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: kustomize
kustomize: $(KUSTOMIZE) ## Install kustomize into bin/.
$(KUSTOMIZE):
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: krew
krew: $(KREW) ## Install krew into bin/ (test-release installs the plugin with it).
$(KREW):
	$(call go-install-tool,$(KREW),sigs.k8s.io/krew/cmd/krew,$(KREW_VERSION))

.PHONY: kwok
kwok: $(KWOK) ## Install kwok into bin/ (about 5 minutes the first time).
$(KWOK):
	$(call go-install-tool,$(KWOK),sigs.k8s.io/kwok/cmd/kwok,$(KWOK_VERSION))

# go-install-tool installs package $2 at version $3 as the file $1.
define go-install-tool
@[ -f "$(1)" ] || { \
set -e; \
echo "Installing $(2)@$(3)"; \
mkdir -p $(LOCALBIN); \
tmp=$$(mktemp -d); \
GOBIN=$$tmp go install $(2)@$(3); \
mv $$tmp/* $(1); \
rm -rf $$tmp; \
}
endef
