"""The ModelOps workload: trains, evaluates, serves and predicts in batch."""

__version__ = "0.1.0"
