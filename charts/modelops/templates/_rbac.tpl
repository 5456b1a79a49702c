{{/*
The operator's permissions, listed once and rendered into a ClusterRole (cluster-wide) or a
Role per watched namespace. No wildcards: every group, resource and verb is named.
*/}}

{{- define "modelops.rules.namespaced" -}}
# The three ModelOps kinds: Kopf watches them, patches finalizers and annotations, and
# an IncrementalUpdate creates and deletes its child TrainingJobs.
- apiGroups: ["modelops.dev"]
  resources: ["trainingjobs", "modeldeployments", "incrementalupdates"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["modelops.dev"]
  resources: ["trainingjobs/status", "modeldeployments/status", "incrementalupdates/status"]
  verbs: ["get", "update", "patch"]
# The built-in autoscaler writes replicas through the scale subresource.
- apiGroups: ["modelops.dev"]
  resources: ["modeldeployments/scale"]
  verbs: ["get", "update", "patch"]
# Children: training pods, inference Deployments, Services, ConfigMaps, PDBs, batch Jobs.
- apiGroups: [""]
  resources: ["pods", "configmaps"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Each TrainingJob gets a Secret with its Ray token, each ModelDeployment one with its
# admin token (written with server-side apply: patch, and create when it is new). The
# operator never reads a Secret: no get, list or watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create", "patch", "delete"]
# Each TrainingJob's NetworkPolicy admits only its own pods.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "delete"]
# Each TrainingJob gets a ServiceAccount whose Role lets its head pod patch itself
# (progress); the operator can grant only what it holds itself (pods get/patch).
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Kopf posts events on the objects it handles.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{- define "modelops.rules.cluster" -}}
# Kopf discovers the resources it serves and notices CRDs coming and going.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- if include "modelops.clusterWide" . }}
# Cluster-wide: Kopf follows namespaces as they come and go.
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["get", "list", "watch"]
{{- if .Values.peering.enabled }}
- apiGroups: ["kopf.dev"]
  resources: ["clusterkopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
{{- end }}
{{- end }}

{{- define "modelops.rules.peering" -}}
- apiGroups: ["kopf.dev"]
  resources: ["kopfpeerings"]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
