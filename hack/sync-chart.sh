#!/usr/bin/env bash
# Copies the generated CRDs, the RBAC roles and the admission policy from config/ into the Helm chart's files/, which
# its templates read: both install paths come from the same controller-gen markers, and
# hack/verify-generated.sh fails if the copies drift.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
files="$ROOT/charts/nodetask-operator/files"
mkdir -p "$files"
cp "$ROOT/config/crd/bases/nodetask.io_nodetasks.yaml" "$files/crd.yaml"
cp "$ROOT/config/crd/bases/nodetask.io_nodetaskschedules.yaml" "$files/crd_nodetaskschedules.yaml"
cp "$ROOT/config/crd/bases/nodetask.io_noderesultslices.yaml" "$files/crd_noderesultslices.yaml"
for role in role leader_election_role health_check_reader_role health_check_reader_example nodetask_editor_role nodetask_viewer_role nodetaskschedule_editor_role nodetaskschedule_viewer_role metrics_reader_role; do
  cp "$ROOT/config/rbac/$role.yaml" "$files/$role.yaml"
done
cp "$ROOT/config/admission/disruption_rights_policy.yaml" "$files/disruption_rights_policy.yaml"
