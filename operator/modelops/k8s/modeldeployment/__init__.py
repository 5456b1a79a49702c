"""The ModelDeployment controller: builders, the serving loop (autoscaler + rollout), handlers.

This package's `__init__` imports nothing, so the pure builders load without Kopf.
"""
