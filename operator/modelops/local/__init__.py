"""The local adapter: the same lifecycle decisions, executed as local processes."""
