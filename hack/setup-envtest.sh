#!/usr/bin/env bash
# Provides kube-apiserver, etcd and kube-controller-manager binaries for envtest and for the
# simulated cluster, without relying on setup-envtest's download site (unreachable offline).
#
# Order of preference:
#   1. binaries already in $K8S_ASSETS (bin/k8s/<version>): nothing to do;
#   2. setup-envtest's download (kube-apiserver and etcd only), when it answers;
#   3. build from the Go module proxy: kube-apiserver and kube-controller-manager from
#      k8s.io/kubernetes in a throwaway module whose go.mod replaces every staging module
#      with its published version, and etcd from a two-line main calling etcdmain.Main.
#
# K8S_EXTRA="kube-scheduler" also builds those commands of k8s.io/kubernetes (the fan-out
# benchmark needs kube-scheduler; tests do not).
#
# Idempotent: a second run finds the binaries and returns in well under a second.
# Prints the assets folder on its last line, so `KUBEBUILDER_ASSETS=$(hack/setup-envtest.sh | tail -1)`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
K8S_VERSION=${K8S_VERSION:-1.37.2}
ETCD_VERSION=${ETCD_VERSION:-3.7.3}
SETUP_ENVTEST_VERSION=${SETUP_ENVTEST_VERSION:-v0.25.1}
K8S_ASSETS=${K8S_ASSETS:-$ROOT/bin/k8s/$K8S_VERSION}
WORK=$ROOT/bin/k8s/build
# The staging modules are published as v0.<minor>.<patch> for Kubernetes v1.<minor>.<patch>.
STAGING_VERSION=v0.${K8S_VERSION#*.}

log() { printf '[setup-envtest] %s\n' "$*" >&2; }

have() { [ -x "$K8S_ASSETS/$1" ]; }

mkdir -p "$K8S_ASSETS"

try_download() {
  local tool=$ROOT/bin/setup-envtest dir
  if [ ! -x "$tool" ]; then
    GOBIN=$ROOT/bin go install "sigs.k8s.io/controller-runtime/tools/setup-envtest@$SETUP_ENVTEST_VERSION" >&2 || return 1
  fi
  # A short timeout: offline, the lookup fails at once; a half-open network should not hang CI.
  dir=$(timeout 120 "$tool" use "$K8S_VERSION" --bin-dir "$ROOT/bin/setup-envtest-cache" -p path 2>/dev/null) || return 1
  cp "$dir/kube-apiserver" "$dir/etcd" "$K8S_ASSETS/"
}

# build_kubernetes builds the named commands of k8s.io/kubernetes (kube-apiserver ...).
build_kubernetes() {
  local mod=$WORK/kubernetes gomod replaces cmds=()
  for c in "$@"; do cmds+=("k8s.io/kubernetes/cmd/$c"); done
  mkdir -p "$mod"
  log "building $* v$K8S_VERSION from the Go module proxy (about 10 minutes on 2 cores from a cold cache)"
  gomod=$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [ -n "$gomod" ] || { log "could not download k8s.io/kubernetes@v$K8S_VERSION"; return 1; }
  # Every `k8s.io/x => ./staging/src/k8s.io/x` replace becomes `k8s.io/x => k8s.io/x v0.N.M`.
  replaces=$(go mod edit -json "$gomod" | sed -n 's/^[[:space:]]*"Path": "\(k8s\.io\/[^"]*\)"$/\1/p' | sort -u)
  {
    echo "module nodetask.io/k8s-build"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    echo
    for r in $replaces; do
      if grep -q "^[[:space:]]*$r => ./staging/" "$gomod"; then
        echo "replace $r => $r $STAGING_VERSION"
      fi
    done
  } >"$mod/go.mod"
  local minor=${K8S_VERSION#*.}; minor=${minor%%.*}
  local ldflags="-s -w \
    -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean \
    -X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z \
    -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION \
    -X k8s.io/client-go/pkg/version.gitMajor=1 \
    -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$mod" && GOFLAGS=-mod=mod go build -trimpath -ldflags "$ldflags" -o "$K8S_ASSETS/" "${cmds[@]}")
}

build_etcd() {
  local mod=$WORK/etcd
  mkdir -p "$mod"
  log "building etcd v$ETCD_VERSION from the Go module proxy (under a minute)"
  cat >"$mod/go.mod" <<GOMOD
module nodetask.io/etcd-build

go 1.26

require go.etcd.io/etcd/server/v3 v$ETCD_VERSION
GOMOD
  cat >"$mod/main.go" <<'GO'
// Command etcd is etcd's own main, built from the Go module proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  (cd "$mod" && GOFLAGS=-mod=mod go build -trimpath -ldflags "-s -w" -o "$K8S_ASSETS/etcd" .)
}

extra_missing() {
  local c
  for c in ${K8S_EXTRA:-}; do have "$c" || return 0; done
  return 1
}

if have kube-apiserver && have etcd && have kube-controller-manager && ! extra_missing; then
  log "using binaries in $K8S_ASSETS"
  echo "$K8S_ASSETS"
  exit 0
fi

if ! { have kube-apiserver && have etcd; }; then
  if [ "${ENVTEST_SKIP_DOWNLOAD:-}" != "1" ] && try_download; then
    log "downloaded kube-apiserver and etcd with setup-envtest"
  else
    log "setup-envtest could not download binaries (offline?); building from modules instead"
  fi
fi
have etcd || build_etcd
missing=()
for c in kube-apiserver kube-controller-manager ${K8S_EXTRA:-}; do have "$c" || missing+=("$c"); done
if [ ${#missing[@]} -gt 0 ]; then
  build_kubernetes "${missing[@]}"
fi
"$K8S_ASSETS/kube-apiserver" --version >&2
log "binaries ready in $K8S_ASSETS"
echo "$K8S_ASSETS"
