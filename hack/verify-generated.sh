#!/usr/bin/env bash
# Fails when the CRD, RBAC role, DeepCopy code or the Helm chart's copies of them in the tree differ from what controller-gen
# makes of the current markers. It regenerates in a scratch copy of the tree, so the work
# tree is left as it is whatever the outcome.
set -euo pipefail
CONTROLLER_GEN=${1:?usage: verify-generated.sh CONTROLLER_GEN}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

tar -C "$ROOT" --exclude=./bin --exclude=./.git -cf - . | tar -C "$scratch" -xf -
(cd "$scratch" && make -s manifests generate CONTROLLER_GEN="$CONTROLLER_GEN" >/dev/null)

status=0
for f in config/crd/bases config/rbac/role.yaml api/v1alpha1/zz_generated.deepcopy.go charts/nodetask-operator/files; do
  diff -ru "$ROOT/$f" "$scratch/$f" || status=1
done
if [ "$status" != 0 ]; then
  echo "Generated files are out of date: run 'make manifests generate' and commit the result." >&2
fi
exit $status
