"""Fixtures of the ingestion tests: ``pg_tmp`` moved to tests/conftest.py (the NGSI-LD sync tests use it too)."""
