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

{{/*
"true" when the provider registers the webhook configurations itself
(VK_FARGATE_WEBHOOK_REGISTER, and RBAC on them): only with webhook.tls.existingSecret
without cert-manager, where the chart cannot know the CA bundle. Else the chart
renders them (webhookconfigurations.yaml), so `helm uninstall` removes them.
*/}}
{{- define "vk-fargate.providerRegistersWebhooks" -}}
{{- if and .Values.webhook.tls.existingSecret (not .Values.webhook.certManager.enabled) }}true{{ end }}
{{- end }}

{{/* The DNS names the API server uses for the webhook Service. */}}
{{- define "vk-fargate.webhookHosts" -}}
{{- $service := include "vk-fargate.webhookService" . }}
{{- list (printf "%s.%s.svc" $service .Release.Namespace) (printf "%s.%s.svc.cluster.local" $service .Release.Namespace) | toJson }}
{{- end }}

{{/*
Both webhook configurations, the one definition for every mode the chart renders them
in. They mirror vk_fargate/admission/registration.py field for field
(tests/e2e/test_chart.py compares them). Takes a dict: root (the chart's context) and
either caBundle (the base64 PEM the API server trusts for the webhook Service) or
annotations (cert-manager.io/inject-ca-from: cert-manager fills caBundle in).
*/}}
{{- define "vk-fargate.webhookConfigurations" -}}
{{- $root := .root }}
{{- $fullname := include "vk-fargate.fullname" $root }}
{{- $service := dict "namespace" $root.Release.Namespace "name" (include "vk-fargate.webhookService" $root) "port" 443 }}
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "vk-fargate.labels" $root | nindent 4 }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
webhooks:
  # Every new pod; Ignore: a provider outage must not stop pod creation cluster-wide.
  - name: pods.fargate.vk-fargate.io
    clientConfig:
      {{- with .caBundle }}
      caBundle: {{ . }}
      {{- end }}
      service:
        {{- merge (dict "path" "/mutate-pods") $service | toYaml | nindent 8 }}
    rules:
      - apiGroups: [""]
        apiVersions: [v1]
        operations: [CREATE]
        resources: [pods]
        scope: Namespaced
    namespaceSelector:
      matchExpressions:
        - key: kubernetes.io/metadata.name
          operator: NotIn
          values:
            {{- list $root.Release.Namespace | toYaml | nindent 12 }}
    failurePolicy: Ignore
    reinvocationPolicy: Never
    sideEffects: None
    admissionReviewVersions: [v1]
    timeoutSeconds: 5
    matchPolicy: Equivalent
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "vk-fargate.labels" $root | nindent 4 }}
  {{- with .annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
webhooks:
  # At most 10 profiles per cluster; Fail: an unchecked profile cannot be taken back.
  - name: profiles.fargate.vk-fargate.io
    clientConfig:
      {{- with .caBundle }}
      caBundle: {{ . }}
      {{- end }}
      service:
        {{- merge (dict "path" "/validate-profiles") $service | toYaml | nindent 8 }}
    rules:
      - apiGroups: [fargate.vk-fargate.io]
        apiVersions: [v1]
        operations: [CREATE]
        resources: [fargateprofiles]
        scope: "*"
    failurePolicy: Fail
    sideEffects: None
    admissionReviewVersions: [v1]
    timeoutSeconds: 5
    matchPolicy: Equivalent
{{- end }}

{{- define "vk-fargate.fleetTokenSecret" -}}
{{- default (printf "%s-fleet-token" (include "vk-fargate.fullname" .)) .Values.fleet.token.secretName }}
{{- end }}

{{/* Refuse settings that install but cannot work. */}}
{{- define "vk-fargate.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled: replicas without it would all schedule and reconcile the same pods" }}
{{- end }}
{{- include "vk-fargate.validateFleet" . }}
{{- end }}

{{/* The provider's own rule (vk_fargate/settings.py): TLS to the fleet unless it is on
loopback or insecure is asked for; a CA bundle only for https. */}}
{{- define "vk-fargate.validateFleet" -}}
{{- $url := urlParse .Values.fleet.url }}
{{- if or (not (has $url.scheme (list "http" "https"))) (not $url.hostname) }}
{{- fail (printf "fleet.url must be https://HOST[:PORT] (or http:// on loopback), not %q" .Values.fleet.url) }}
{{- end }}
{{- if eq $url.scheme "http" }}
{{- if .Values.fleet.caBundle }}
{{- fail (printf "fleet.caBundle is set but fleet.url %q is plain http: use https://" .Values.fleet.url) }}
{{- end }}
{{- $loopback := or (eq $url.hostname "localhost" "::1") (regexMatch "^127\\.[0-9]+\\.[0-9]+\\.[0-9]+$" $url.hostname) }}
{{- if not (or $loopback .Values.fleet.insecure) }}
{{- fail (printf "fleet.url %q reaches the fleet without TLS: the bearer token and Secrets' values would cross the network in clear. Use https:// (with fleet.caBundle for a private CA), or set fleet.insecure=true if you mean it" .Values.fleet.url) }}
{{- end }}
{{- end }}
{{- if and .Values.fleet.caBundle (not (contains "-----BEGIN CERTIFICATE-----" .Values.fleet.caBundle)) }}
{{- fail "fleet.caBundle must be PEM certificates (-----BEGIN CERTIFICATE-----), e.g. --set-file fleet.caBundle=ca.crt" }}
{{- end }}
{{- end }}
