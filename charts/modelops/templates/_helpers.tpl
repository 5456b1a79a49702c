{{/* Names, labels and images shared by the templates. */}}

{{- define "modelops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "modelops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelops.labels" -}}
helm.sh/chart: {{ include "modelops.chart" . }}
app.kubernetes.io/name: {{ include "modelops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modelops
{{- end }}

{{- define "modelops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is set; the tag defaults to appVersion. */}}
{{- define "modelops.imageRef" -}}
{{- $image := index . 0 }}
{{- $root := index . 1 }}
{{- if $image.digest }}
{{- printf "%s@%s" $image.repository $image.digest }}
{{- else }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}
{{- end }}

{{- define "modelops.image" -}}
{{- include "modelops.imageRef" (list .Values.image .) }}
{{- end }}

{{- define "modelops.workloadImage" -}}
{{- include "modelops.imageRef" (list .Values.workloadImage .) }}
{{- end }}

{{- define "modelops.peeringName" -}}
{{- default (include "modelops.fullname" .) .Values.peering.name }}
{{- end }}

{{- define "modelops.webhookServiceName" -}}
{{- printf "%s-webhook" (include "modelops.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelops.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "modelops.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modelops.clusterWide" -}}
{{- if not .Values.watchNamespaces }}true{{- end }}
{{- end }}

{{/* The webhook certificate directory inside the operator container. */}}
{{- define "modelops.webhookCertDir" -}}
/etc/modelops/webhook
{{- end }}

{{/* The Secret with the key the ModelDeployments' admin tokens are derived from. */}}
{{- define "modelops.adminKeySecretName" -}}
{{- default (printf "%s-admin-key" (include "modelops.fullname" .) | trunc 63 | trimSuffix "-") .Values.adminKey.existingSecret }}
{{- end }}

{{- define "modelops.adminKeyDir" -}}
/etc/modelops/admin-key
{{- end }}
