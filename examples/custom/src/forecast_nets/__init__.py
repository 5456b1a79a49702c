"""Custom networks for the forecasting examples, built by ModelOps through their factories."""
