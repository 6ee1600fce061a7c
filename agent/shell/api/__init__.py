"""The agent's HTTP surface: JSON API, Prometheus /metrics and the status page."""
