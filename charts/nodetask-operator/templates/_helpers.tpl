{{/* The prefix of every object's name. */}}
{{- define "nodetask.fullname" -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "nodetask.serviceAccountName" -}}
{{- include "nodetask.fullname" . }}-controller-manager
{{- end -}}

{{- define "nodetask.labels" -}}
app.kubernetes.io/name: nodetask-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "nodetask.selectorLabels" -}}
app.kubernetes.io/name: nodetask-operator
app.kubernetes.io/instance: {{ .Release.Name }}
control-plane: controller-manager
{{- end -}}
