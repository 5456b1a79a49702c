"""The Kubernetes adapter: thin Kopf handlers and pure builders of child objects."""
