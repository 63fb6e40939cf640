"""SMART PATH — the open-data API, open-data exports and the open event API (FastAPI)."""
