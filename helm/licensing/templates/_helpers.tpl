{{/* Names, labels and the pieces every pod of the chart shares. */}}

{{- define "licensing.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "licensing.fullname" -}}
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

{{- define "licensing.selectorLabels" -}}
app.kubernetes.io/name: {{ include "licensing.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "licensing.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "licensing.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: licensing
{{- end -}}

{{- define "licensing.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "licensing.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The image reference: the digest when given, else the tag (default: appVersion). */}}
{{- define "licensing.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security profile, for a pod. */}}
{{- define "licensing.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
fsGroup: {{ .Values.runAsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted Pod Security profile, for a container. */}}
{{- define "licensing.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Whether any credential is configured (else the service needs auth.insecure). */}}
{{- define "licensing.hasCredentials" -}}
{{- if or .Values.auth.apiKeys.existingSecret .Values.auth.jwks.existingSecret .Values.auth.clientCertificates.existingSecret -}}
true
{{- end -}}
{{- end -}}

{{/* Checks across values that the schema cannot express. */}}
{{- define "licensing.validate" -}}
{{- if le (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownGraceSeconds) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be longer than shutdownGraceSeconds (%d): the pod would be killed before its calls drained" (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownGraceSeconds)) -}}
{{- end -}}
{{- if and (not (include "licensing.hasCredentials" .)) (not .Values.auth.insecure) -}}
{{- fail "no credentials: set auth.apiKeys.existingSecret, auth.jwks.existingSecret or auth.clientCertificates.existingSecret, or auth.insecure=true for a network nobody else can reach" -}}
{{- end -}}
{{- if and .Values.auth.jwks.existingSecret (not .Values.auth.jwks.issuer) -}}
{{- fail "auth.jwks.issuer: required with auth.jwks.existingSecret (the iss every token must carry)" -}}
{{- end -}}
{{- if and .Values.auth.clientCertificates.existingSecret (not .Values.tls.clientCA.existingSecret) -}}
{{- fail "auth.clientCertificates.existingSecret: needs tls.clientCA.existingSecret (the CA of the client certificates)" -}}
{{- end -}}
{{- if and .Values.tls.clientCA.existingSecret (not .Values.tls.existingSecret) -}}
{{- fail "tls.clientCA.existingSecret: needs tls.existingSecret (mutual TLS is TLS first)" -}}
{{- end -}}
{{- end -}}
