{{/* Names and labels. */}}
{{- define "vk-fargate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Room for the longest suffix (-leader-election, 16 characters) within 63. */}}
{{- define "vk-fargate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 47 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 47 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "vk-fargate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vk-fargate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vk-fargate.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "vk-fargate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "vk-fargate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vk-fargate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vk-fargate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "vk-fargate.webhookService" -}}
{{- printf "%s-webhook" (include "vk-fargate.fullname" .) }}
{{- end }}

{{- define "vk-fargate.kubeletService" -}}
{{- printf "%s-kubelet" (include "vk-fargate.fullname" .) }}
{{- end }}

{{/* The Secret with the webhooks' serving certificate (tls.crt, tls.key). */}}
{{- define "vk-fargate.webhookTLSSecret" -}}
{{- if and .Values.webhook.tls.existingSecret (not .Values.webhook.certManager.enabled) }}
{{- .Values.webhook.tls.existingSecret }}
{{- else }}
{{- printf "%s-webhook-tls" (include "vk-fargate.fullname" .) }}
{{- end }}
{{- end }}

{{/* The DNS names the API server uses for the webhook Service. */}}
{{- define "vk-fargate.webhookHosts" -}}
{{- $service := include "vk-fargate.webhookService" . }}
{{- list (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) | toJson }}
{{- end }}

{{- define "vk-fargate.fleetTokenSecret" -}}
{{- default (printf "%s-fleet-token" (include "vk-fargate.fullname" .)) .Values.fleet.token.secretName }}
{{- end }}

{{/* Refuse settings that install but cannot work. */}}
{{- define "vk-fargate.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: replicas without it would all schedule and reconcile the same pods" }}
{{- end }}
{{- end }}
