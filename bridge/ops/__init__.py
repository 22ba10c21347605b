"""Operating the bridge: metrics, health endpoints, logging, worker processes."""
