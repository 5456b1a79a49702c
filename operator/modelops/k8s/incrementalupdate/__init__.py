"""The IncrementalUpdate controller: data watch, update runs, the evaluation gate, promotion.

This package's `__init__` imports nothing, so the pure builders load without Kopf.
"""
