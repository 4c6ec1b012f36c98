"""HTTP: the /predict, /health, /ready and /model routes, the prediction core, request IDs,
the access log and /metrics."""
