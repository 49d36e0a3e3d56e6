#!/usr/bin/env bash
# Builds the kubectl-nodetask archives krew installs (one per platform, each with the
# README and the LICENSE) into dist/plugin/, and writes the krew
# manifest (plugins/nodetask.yaml) with VERSION and the archives' sha256 filled in.
# Usage: hack/plugin-dist.sh v0.1.0
set -euo pipefail
version=${1:?usage: hack/plugin-dist.sh VERSION (a semver tag such as v0.1.0)}
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "VERSION must be a semver tag like v0.1.0, not $version" >&2; exit 2; }
out=dist/plugin
rm -rf "$out" && mkdir -p "$out"
manifest=$(cat plugins/nodetask.yaml)
manifest=${manifest//'${VERSION}'/$version}
for platform in linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64; do
  os=${platform%/*} arch=${platform#*/}
  bin=kubectl-nodetask; [[ $os == windows ]] && bin+=.exe
  stage=$(mktemp -d)
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "-s -w" -o "$stage/$bin" ./cmd/kubectl-nodetask
  cp README.md "$stage/"
  [[ -f LICENSE ]] && cp LICENSE "$stage/"
  archive="$out/kubectl-nodetask_${version}_${os}_${arch}.tar.gz"
  tar -C "$stage" -czf "$archive" .
  rm -rf "$stage"
  sum=$(sha256sum "$archive" | cut -d' ' -f1)
  manifest=${manifest//"\${SHA256_${os}_${arch}}"/$sum}
  echo "$archive $sum"
done
printf '%s\n' "$manifest" > "$out/nodetask.yaml"
echo "krew manifest: $out/nodetask.yaml"
[[ -f LICENSE ]] || echo "warning: the repository has no LICENSE file; krew's index requires an open-source license in each archive" >&2
