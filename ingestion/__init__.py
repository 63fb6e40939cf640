"""SMART PATH — ingestion: level frames from the smart MQTT broker into PostgreSQL/TimescaleDB.

Validates every message, quarantines bad ones with their reason, writes in batches
with COPY, maintains the 1 min / 15 min / 1 h / 1 day aggregates and daily Lden, and
acknowledges a message to the broker only once its rows are committed.
"""
