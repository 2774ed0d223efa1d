{{- define "terratiler.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "terratiler.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "terratiler.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "terratiler.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "terratiler.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "terratiler.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component: include with (list $ "api") */}}
{{- define "terratiler.selector" -}}
app.kubernetes.io/name: {{ include "terratiler.name" (index . 0) }}
app.kubernetes.io/instance: {{ (index . 0).Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "terratiler.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The workers' and scheduler's image: the API's unless dask.image says otherwise. */}}
{{- define "terratiler.daskImage" -}}
{{- if .Values.dask.image.repository -}}
{{- printf "%s:%s" .Values.dask.image.repository (default .Chart.AppVersion .Values.dask.image.tag) -}}
{{- else -}}
{{- include "terratiler.image" . -}}
{{- end -}}
{{- end -}}

{{- define "terratiler.schedulerAddress" -}}
{{- printf "tcp://%s-scheduler:%v" (include "terratiler.fullname" .) .Values.dask.scheduler.port -}}
{{- end -}}

{{/* A setting's value as TERRATILER_* reads it: lists comma-separated, whole numbers without exponent. */}}
{{- define "terratiler.settingValue" -}}
{{- if kindIs "slice" . -}}
{{- join "," . -}}
{{- else if and (kindIs "float64" .) (eq (floor .) .) -}}
{{- int64 . -}}
{{- else -}}
{{- toString . -}}
{{- end -}}
{{- end -}}

{{- define "terratiler.secretSettings" -}}
{{- list "database_url" "api_keys" | toJson -}}
{{- end -}}

{{- define "terratiler.bundledPostgres" -}}
{{- if and (not .Values.postgresql.external.url) (not .Values.postgresql.external.existingSecret) (not .Values.settings.database_url) -}}true{{- end -}}
{{- end -}}

{{- define "terratiler.objectStorageSecret" -}}
{{- if .Values.objectStorage.existingSecret -}}
{{- .Values.objectStorage.existingSecret -}}
{{- else if .Values.objectStorage.accessKeyId -}}
{{- printf "%s-object-storage" (include "terratiler.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Environment of the API and the workers: settings, database, object storage. */}}
{{- define "terratiler.env" -}}
- name: HOME
  value: /tmp
- name: TERRATILER_DASK_SCHEDULER
  value: {{ default (include "terratiler.schedulerAddress" .) .Values.settings.dask_scheduler | quote }}
{{- if include "terratiler.bundledPostgres" . }}
- name: TERRATILER_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "terratiler.fullname" . }}-postgresql
      key: password
- name: TERRATILER_DATABASE_URL
  value: {{ printf "postgresql+psycopg://%s:$(TERRATILER_PG_PASSWORD)@%s-postgresql:5432/%s" .Values.postgresql.bundled.user (include "terratiler.fullname" .) .Values.postgresql.bundled.database | quote }}
{{- else if .Values.postgresql.external.existingSecret }}
- name: TERRATILER_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgresql.external.existingSecret }}
      key: {{ .Values.postgresql.external.existingSecretKey }}
{{- end }}
{{- if and .Values.objectStorage.endpointUrl (not .Values.settings.s3_endpoint_url) }}
- name: TERRATILER_S3_ENDPOINT_URL
  value: {{ .Values.objectStorage.endpointUrl | quote }}
{{- end }}
- name: AWS_DEFAULT_REGION
  value: {{ .Values.objectStorage.region | quote }}
{{- with include "terratiler.objectStorageSecret" . }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_ACCESS_KEY_ID
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: AWS_SECRET_ACCESS_KEY
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "terratiler.envFrom" -}}
- configMapRef:
    name: {{ include "terratiler.fullname" . }}-settings
- secretRef:
    name: {{ include "terratiler.fullname" . }}-settings
{{- end -}}

{{- define "terratiler.volumes" -}}
- name: tmp
  emptyDir: {}
- name: data
  emptyDir: {}
{{- end -}}

{{- define "terratiler.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /data
{{- end -}}
