"""The TrainingJob controller: thin Kopf handlers, pure builders, and the reconcile step.

This package's `__init__` imports nothing: `driver` runs inside the workload image,
where Kopf and the Kubernetes client are not installed.
"""
