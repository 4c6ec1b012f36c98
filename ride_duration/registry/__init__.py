"""The MLflow registry: resolve and fetch a model URI, follow it (watcher, hand-off between workers),
the logged model format, and promotion through the gate."""
