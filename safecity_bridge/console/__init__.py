"""The operator console: a FastAPI app on the bridge's own port, authentication required."""
