{{/* Chart name, overridable. */}}
{{- define "bonsai.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* "<release>-<chart>", or the release name when it already holds the chart name. */}}
{{- define "bonsai.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "bonsai.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bonsai.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bonsai.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bonsai.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: server
{{- end -}}

{{- define "bonsai.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bonsai.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bonsai.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Seconds Kubernetes waits after SIGTERM: past the server's own grace. */}}
{{- define "bonsai.terminationGracePeriodSeconds" -}}
{{- $grace := int64 .Values.server.shutdownGraceSeconds -}}
{{- $period := int64 .Values.terminationGracePeriodSeconds -}}
{{- if eq $period 0 -}}
{{- add $grace 15 -}}
{{- else if le $period $grace -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed server.shutdownGraceSeconds (%d), or running jobs are killed" $period $grace) -}}
{{- else -}}
{{- $period -}}
{{- end -}}
{{- end -}}

{{/* Where the TLS Secret is mounted. */}}
{{- define "bonsai.tlsDir" -}}
/etc/bonsai/tls
{{- end -}}

{{/* TLS values that cannot work are refused at render time, not at the pod's start. */}}
{{- define "bonsai.tlsChecked" -}}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) -}}
{{- fail "tls.enabled needs tls.secretName: the kubernetes.io/tls Secret holding tls.crt and tls.key" -}}
{{- end -}}
{{- if and .Values.tls.mutual (not .Values.tls.enabled) -}}
{{- fail "tls.mutual needs tls.enabled: mutual TLS is TLS with client certificates" -}}
{{- end -}}
{{- end -}}

{{/*
What the probes do: the native gRPC health check, or with TLS a TCP connect
to the gRPC port, since the kubelet's gRPC probe cannot speak TLS.
*/}}
{{- define "bonsai.probeAction" -}}
{{- if .Values.tls.enabled -}}
tcpSocket:
  port: {{ int64 .Values.containerPorts.grpc }}
{{- else -}}
grpc:
  port: {{ int64 .Values.containerPorts.grpc }}
  service: {{ .Values.probes.service | quote }}
{{- end -}}
{{- end -}}
