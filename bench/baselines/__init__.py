"""Apps the benchmark measures the service against (never imported by the service)."""
