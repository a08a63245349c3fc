"""What a run shows an operator's tools: Prometheus metrics and OpenTelemetry traces."""
