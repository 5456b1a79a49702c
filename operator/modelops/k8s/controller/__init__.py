"""The controller kit: what every resource's controller shares.

- `loop`: the per-object reconcile loop (wake-ups, debounce, back-off, worker pool);
- `status`: the one status writer (conditional on resourceVersion, stale-read guard);
- `naming`: child names, label values, owner references, the common labels.

A resource's controller supplies `reconcile(namespace, name) -> Outcome` and its own
read → plan → write; everything about *how* objects are looped over and written is here.
"""
