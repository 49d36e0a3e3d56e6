#!/usr/bin/env bash
# Builds every artifact of a release into dist/release/VERSION/:
#   nodetask-operator_VERSION.oci.tar   the manager image (OCI archive, PLATFORMS) and .digest
#   install.yaml                        the install bundle, its image pinned to that digest
#   nodetask-operator-X.Y.Z.tgz         the Helm chart, appVersion VERSION, image.digest set
#   kubectl-nodetask_VERSION_*.tar.gz   the plugin's krew archives (PLUGIN_PLATFORMS)
#   nodetask.yaml                       the krew manifest with their sha256
#   SHA256SUMS                          every file above
# Usage: hack/release.sh v0.1.0 (make release VERSION=v0.1.0). CHANGELOG.md must have a
# "## VERSION" section. Reads IMAGE_REPO, PLATFORMS, PLUGIN_PLATFORMS, KUSTOMIZE.
set -euo pipefail
version=${1:?usage: hack/release.sh VERSION (a semver tag such as v0.1.0)}
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]] || { echo "VERSION must be a semver tag like v0.1.0, not $version" >&2; exit 2; }
grep -qx "## $version" CHANGELOG.md || { echo "CHANGELOG.md has no '## $version' section: write what the release changes first" >&2; exit 2; }
repo=${IMAGE_REPO:-ghcr.io/nodetask/nodetask-operator}
out=dist/release/$version
rm -rf "$out" && mkdir -p "$out"

archive=$out/nodetask-operator_$version.oci.tar
make --no-print-directory image VERSION="$version" IMAGE_REPO="$repo" PLATFORMS="${PLATFORMS:-linux/amd64,linux/arm64}" IMAGE_ARCHIVE="$archive"
digest=$(cat "$archive.digest")
image=$repo:$version@$digest

make --no-print-directory build-installer IMG="$image" ${KUSTOMIZE:+KUSTOMIZE="$KUSTOMIZE"} >/dev/null
cp dist/install.yaml "$out/install.yaml"

chart=$(mktemp -d)
trap 'rm -rf "$chart"' EXIT
cp -r charts/nodetask-operator "$chart/"
sed -i -E "s|^(  digest: ).*$|\1\"$digest\"|" "$chart/nodetask-operator/values.yaml"
grep -q "digest: \"$digest\"" "$chart/nodetask-operator/values.yaml" || { echo "the chart's values.yaml has no image.digest to set" >&2; exit 1; }
go run ./hack/helm-package --version "${version#v}" --app-version "$version" "$chart/nodetask-operator" "$out"

PLUGIN_OUT=$out hack/plugin-dist.sh "$version"

(cd "$out" && sha256sum -- * | grep -v ' SHA256SUMS$' > SHA256SUMS)
echo "release $version in $out: image $image"
