{{/* The name of a component's objects: <release>-<component>, or just the component when the release is "cmp". */}}
{{- define "cmp.name" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
{{- if eq $root.Release.Name "cmp" -}}cmp-{{ $component }}{{- else -}}{{ $root.Release.Name }}-cmp-{{ $component }}{{- end -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "cmp.labels" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
app.kubernetes.io/name: cmp
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ $component }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
helm.sh/chart: {{ $root.Chart.Name }}-{{ $root.Chart.Version }}
{{- end -}}

{{/* The labels a component's pods are selected by. */}}
{{- define "cmp.selector" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
app.kubernetes.io/name: cmp
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ $component }}
{{- end -}}

{{- define "cmp.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* The pod's security context: the namespace's `restricted` pod-security level. */}}
{{- define "cmp.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "cmp.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Probes on the component's health port: /healthz (alive) and /readyz (caches synced, ready to serve). */}}
{{- define "cmp.probes" -}}
livenessProbe:
  httpGet: {path: /healthz, port: health}
  periodSeconds: 10
  failureThreshold: 3
readinessProbe:
  httpGet: {path: /readyz, port: health}
  periodSeconds: 5
  failureThreshold: 2
{{- end -}}

{{/* Environment every binary reads: its pod name and namespace, the log format. */}}
{{- define "cmp.env" -}}
- name: POD_NAME
  valueFrom: {fieldRef: {fieldPath: metadata.name}}
- name: POD_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
- name: CMP_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- end -}}

{{/* A PodDisruptionBudget for a component: [root, component, replicas]. */}}
{{- define "cmp.pdb" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
{{- if $root.Values.podDisruptionBudget.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "cmp.name" (list $root $component) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cmp.labels" (list $root $component) | nindent 4 }}
spec:
  maxUnavailable: {{ $root.Values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "cmp.selector" (list $root $component) | nindent 6 }}
{{- end }}
{{- end -}}

{{/* An optional ServiceMonitor (Prometheus Operator) scraping a component's /metrics. */}}
{{- define "cmp.serviceMonitor" -}}
{{- $root := index . 0 -}}{{- $component := index . 1 -}}
{{- if $root.Values.serviceMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ include "cmp.name" (list $root $component) }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "cmp.labels" (list $root $component) | nindent 4 }}
    {{- with $root.Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "cmp.selector" (list $root $component) | nindent 6 }}
  endpoints:
    - port: health
      path: /metrics
      interval: {{ $root.Values.serviceMonitor.interval }}
{{- end }}
{{- end -}}
