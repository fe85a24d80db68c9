{{/*
Chart name, truncated to the 63 characters Kubernetes allows in names.
*/}}
{{- define "triton-ecommerce.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: <release>-<chart>, or the release name when it already contains the chart name.
Truncated to 50 characters so suffixed names (-canary-grpc) stay within 63.
*/}}
{{- define "triton-ecommerce.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "triton-ecommerce.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels.
*/}}
{{- define "triton-ecommerce.labels" -}}
helm.sh/chart: {{ include "triton-ecommerce.chart" . }}
{{ include "triton-ecommerce.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: triton-ecommerce
{{- end }}

{{/*
Selector labels: every Triton pod of this release, stable and canary.
*/}}
{{- define "triton-ecommerce.selectorLabels" -}}
app.kubernetes.io/name: {{ include "triton-ecommerce.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Selector labels of one track ("stable" or "canary"). Called with (dict "root" $ "track" NAME).
*/}}
{{- define "triton-ecommerce.trackSelectorLabels" -}}
{{ include "triton-ecommerce.selectorLabels" .root }}
track: {{ .track }}
{{- end }}

{{/*
Resource name of a track: <fullname> for stable, <fullname>-canary for canary.
Called with (dict "root" $ "track" NAME).
*/}}
{{- define "triton-ecommerce.trackName" -}}
{{- if eq .track "canary" }}
{{- printf "%s-canary" (include "triton-ecommerce.fullname" .root) }}
{{- else }}
{{- include "triton-ecommerce.fullname" .root }}
{{- end }}
{{- end }}

{{/*
Tracks this release runs: ["stable"] or ["stable", "canary"], as JSON.
*/}}
{{- define "triton-ecommerce.tracks" -}}
{{- if .Values.canary.enabled }}["stable","canary"]{{ else }}["stable"]{{ end }}
{{- end }}

{{/*
Name of the ServiceAccount.
*/}}
{{- define "triton-ecommerce.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "triton-ecommerce.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image of a track. Called with (dict "root" $ "track" NAME).
*/}}
{{- define "triton-ecommerce.image" -}}
{{- $image := .root.Values.image }}
{{- $repository := $image.repository }}
{{- $tag := $image.tag }}
{{- $digest := $image.digest }}
{{- if eq .track "canary" }}
{{- $repository = default $repository .root.Values.canary.image.repository }}
{{- if .root.Values.canary.image.tag }}
{{- $tag = .root.Values.canary.image.tag }}
{{- $digest = "" }}
{{- end }}
{{- end }}
{{- if $digest }}
{{- printf "%s:%s@%s" $repository $tag $digest }}
{{- else }}
{{- printf "%s:%s" $repository $tag }}
{{- end }}
{{- end }}

{{/*
Model repository settings of a track, as JSON: the canary's overrides merged over modelRepository.
Called with (dict "root" $ "track" NAME).
*/}}
{{- define "triton-ecommerce.modelRepository" -}}
{{- $repo := deepCopy .root.Values.modelRepository }}
{{- $where := "modelRepository" }}
{{- if eq .track "canary" }}
{{- $repo = mergeOverwrite $repo (deepCopy .root.Values.canary.modelRepository) }}
{{- $where = "modelRepository with canary.modelRepository" }}
{{- end }}
{{- $bucketOf := $repo.source }}
{{- if eq $repo.source "sync" }}
{{- $bucketOf = $repo.sync.from }}
{{- end }}
{{- if and (eq $bucketOf "s3") (not $repo.s3.bucket) }}
{{- fail (printf "%s: source %s needs s3.bucket" $where $repo.source) }}
{{- else if and (eq $bucketOf "gcs") (not $repo.gcs.bucket) }}
{{- fail (printf "%s: source %s needs gcs.bucket" $where $repo.source) }}
{{- else if and (eq $bucketOf "pvc") (not $repo.pvc.claimName) }}
{{- fail (printf "%s: source pvc needs pvc.claimName" $where) }}
{{- end }}
{{- toJson $repo }}
{{- end }}

{{/*
Path inside a bucket or volume: "" or "/<prefix>".
*/}}
{{- define "triton-ecommerce.suffix" -}}
{{- if . }}/{{ . }}{{ end }}
{{- end }}

{{/*
The --model-repository value for a repository (JSON from triton-ecommerce.modelRepository).
*/}}
{{- define "triton-ecommerce.repositoryUri" -}}
{{- $repo := . }}
{{- if eq $repo.source "s3" }}
{{- $endpoint := ternary (printf "%s/" $repo.s3.endpoint) "" (ne $repo.s3.endpoint "") }}
{{- printf "s3://%s%s%s" $endpoint $repo.s3.bucket (include "triton-ecommerce.suffix" $repo.s3.prefix) }}
{{- else if eq $repo.source "gcs" }}
{{- printf "gs://%s%s" $repo.gcs.bucket (include "triton-ecommerce.suffix" $repo.gcs.prefix) }}
{{- else }}
{{- print "/models" }}
{{- end }}
{{- end }}

{{/*
Seconds Triton waits for in-flight requests after SIGTERM: what is left of the grace period
after the preStop sleep, minus 5 s for the process to exit.
*/}}
{{- define "triton-ecommerce.exitTimeoutSecs" -}}
{{- $left := sub (sub .Values.terminationGracePeriodSeconds .Values.preStopSleepSeconds) 5 }}
{{- if lt $left 1 }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed preStopSleepSeconds (%d) by more than 5 seconds" (int .Values.terminationGracePeriodSeconds) (int .Values.preStopSleepSeconds)) }}
{{- end }}
{{- $left }}
{{- end }}

{{/*
Fail when the HTTPRoute and the GRPCRoute would share a hostname: Gateway API accepts only
one of them on a listener.
*/}}
{{- define "triton-ecommerce.checkRouteHostnames" -}}
{{- $gw := .Values.gateway }}
{{- if and $gw.http.enabled $gw.grpc.enabled }}
{{- if or (not $gw.http.hostnames) (not $gw.grpc.hostnames) }}
{{- fail "gateway.http.hostnames and gateway.grpc.hostnames must both be set (and differ) when both routes are enabled: Gateway API accepts only one route kind per hostname on a listener" }}
{{- end }}
{{- range $gw.http.hostnames }}
{{- if has . $gw.grpc.hostnames }}
{{- fail (printf "hostname %s is in both gateway.http.hostnames and gateway.grpc.hostnames: Gateway API accepts only one route kind per hostname on a listener" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
