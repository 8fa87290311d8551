{{/*
The collector beside a workload: templates a workload chart includes in its own pod spec. The
workload chart depends on this one (with server.enabled: false when the service runs in another
release) and passes this chart's context, so that the collector's settings are its values
under `licensing.collector`:

  spec:
    initContainers:   # containers: when collector.native is false
      {{- include "licensing.collector.container" .Subcharts.licensing | nindent 6 }}
    volumes:
      {{- include "licensing.collector.volumes" .Subcharts.licensing | nindent 6 }}

The workload's own containers mount the events volume (collector.eventsVolume) and write JSON
lines to the files the collector follows, or push to its local Ingest endpoint on
127.0.0.1:collector.localPort. See helm/examples/agent-gateway.
*/}}

{{- define "licensing.collector.url" -}}
{{- $c := .Values.collector -}}
{{- if $c.licensing -}}
{{- $c.licensing -}}
{{- else if .Values.server.enabled -}}
{{- printf "%s://%s.%s.svc:%d" (ternary "https" "http" (not (empty .Values.tls.existingSecret))) (include "licensing.fullname" .) .Release.Namespace (int .Values.service.port) -}}
{{- else -}}
{{- fail "collector.licensing: the licensing service's URL is needed when this release does not run the service (server.enabled: false), e.g. http://licensing.licensing.svc:50051" -}}
{{- end -}}
{{- end -}}

{{/* One container (a list item): a native sidecar when collector.native is true. */}}
{{- define "licensing.collector.container" -}}
{{- $c := .Values.collector -}}
{{- $url := include "licensing.collector.url" . -}}
- name: licensing-collector
  image: {{ include "licensing.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  {{- if $c.native }}
  # A native sidecar: started before the workload's containers, stopped after them.
  restartPolicy: Always
  {{- end }}
  command: [/usr/local/bin/licensing-collector]
  args:
    - --licensing={{ $url }}
    - --spool-dir=/var/lib/licensing-collector/spool
    {{- range $c.follow }}
    - --follow={{ . }}
    {{- end }}
    - --listen=127.0.0.1:{{ $c.localPort }}
    {{- if $c.metricsPort }}
    - --metrics-listen=0.0.0.0:{{ $c.metricsPort }}
    {{- end }}
    # Half of every event's identity: the pod's name, so that two pods' events never collide.
    - --source=$(POD_NAME)
    - --batch-size={{ $c.batchSize }}
    - --log-format={{ $c.logFormat }}
    {{- if $c.apiKeySecret.name }}
    - --api-key-file=/etc/licensing-collector/api-key/{{ $c.apiKeySecret.key }}
    {{- end }}
    {{- if $c.caSecret.name }}
    - --ca-file=/etc/licensing-collector/ca/{{ $c.caSecret.key }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
  {{- if $c.metricsPort }}
  ports:
    - name: collector-mtr
      containerPort: {{ $c.metricsPort }}
      protocol: TCP
  {{- end }}
  # The local endpoint is on loopback, where the kubelet cannot reach: the image's own
  # `licensing healthcheck` asks it from inside the container.
  startupProbe:
    exec:
      command: [/usr/local/bin/licensing, healthcheck, "--address=127.0.0.1:{{ $c.localPort }}", --timeout-seconds=5]
    periodSeconds: 2
    failureThreshold: 60
  livenessProbe:
    exec:
      command: [/usr/local/bin/licensing, healthcheck, "--address=127.0.0.1:{{ $c.localPort }}", --timeout-seconds=5]
    periodSeconds: 20
    timeoutSeconds: 6
    failureThreshold: 3
  resources:
    {{- toYaml $c.resources | nindent 4 }}
  securityContext:
    {{- include "licensing.containerSecurityContext" . | nindent 4 }}
  volumeMounts:
    - name: {{ $c.spoolVolume }}
      mountPath: /var/lib/licensing-collector
    - name: {{ $c.eventsVolume }}
      mountPath: {{ $c.eventsMountPath }}
      readOnly: true
    {{- if $c.apiKeySecret.name }}
    - name: licensing-collector-key
      mountPath: /etc/licensing-collector/api-key
      readOnly: true
    {{- end }}
    {{- if $c.caSecret.name }}
    - name: licensing-collector-ca
      mountPath: /etc/licensing-collector/ca
      readOnly: true
    {{- end }}
{{- end -}}

{{/* The collector's volumes (list items): its spool, the shared events, its credentials. */}}
{{- define "licensing.collector.volumes" -}}
{{- $c := .Values.collector -}}
- name: {{ $c.spoolVolume }}
  {{- if $c.spoolClaim }}
  persistentVolumeClaim:
    claimName: {{ $c.spoolClaim }}
  {{- else }}
  emptyDir:
    sizeLimit: {{ $c.spoolSizeLimit }}
  {{- end }}
- name: {{ $c.eventsVolume }}
  emptyDir:
    sizeLimit: {{ $c.eventsSizeLimit }}
{{- if $c.apiKeySecret.name }}
- name: licensing-collector-key
  secret:
    secretName: {{ $c.apiKeySecret.name }}
    defaultMode: 0440
{{- end }}
{{- if $c.caSecret.name }}
- name: licensing-collector-ca
  secret:
    secretName: {{ $c.caSecret.name }}
    defaultMode: 0440
{{- end }}
{{- end -}}
