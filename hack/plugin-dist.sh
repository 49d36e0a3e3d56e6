#!/usr/bin/env bash
# Builds the kubectl-nodetask archives krew installs (one per platform, each with the
# README and the LICENSE) into dist/plugin/, and writes the krew manifest
# (plugins/nodetask.yaml) with VERSION and the archives' sha256 filled in.
# Usage: hack/plugin-dist.sh v0.1.0
# PLUGIN_PLATFORMS="linux/amd64" builds only those platforms, and the manifest lists only
# them (the release test builds one to stay fast; a release builds all).
set -euo pipefail
version=${1:?usage: hack/plugin-dist.sh VERSION (a semver tag such as v0.1.0)}
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "VERSION must be a semver tag like v0.1.0, not $version" >&2; exit 2; }
all_platforms="linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64"
out=${PLUGIN_OUT:-dist/plugin}
mkdir -p "$out" && rm -f "$out"/kubectl-nodetask_*.tar.gz "$out/nodetask.yaml"
manifest=$(cat plugins/nodetask.yaml)
manifest=${manifest//'${VERSION}'/$version}
for platform in ${PLUGIN_PLATFORMS:-$all_platforms}; do
  [[ " $all_platforms " == *" $platform "* ]] || { echo "unknown platform $platform (one of: $all_platforms)" >&2; exit 2; }
  os=${platform%/*} arch=${platform#*/}
  bin=kubectl-nodetask; [[ $os == windows ]] && bin+=.exe
  stage=$(mktemp -d)
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags "-s -w" -o "$stage/$bin" ./cmd/kubectl-nodetask
  cp README.md LICENSE "$stage/"
  archive="$out/kubectl-nodetask_${version}_${os}_${arch}.tar.gz"
  tar -C "$stage" -czf "$archive" .
  rm -rf "$stage"
  sum=$(sha256sum "$archive" | cut -d' ' -f1)
  manifest=${manifest//"\${SHA256_${os}_${arch}}"/$sum}
  echo "$archive $sum"
done
# Platforms not built leave their entries unfilled: drop those entries (5 lines each, from
# "  - selector:").
printf '%s\n' "$manifest" | awk '
  /^  - selector:/ { if (entry != "" && entry !~ /\$\{SHA256_/) printf "%s", entry; entry = $0 "\n"; inlist = 1; next }
  inlist && /^  [^ -]/ { if (entry !~ /\$\{SHA256_/) printf "%s", entry; entry = ""; inlist = 0 }
  inlist { entry = entry $0 "\n"; next }
  { print }
  END { if (entry != "" && entry !~ /\$\{SHA256_/) printf "%s", entry }
' > "$out/nodetask.yaml"
echo "krew manifest: $out/nodetask.yaml"
