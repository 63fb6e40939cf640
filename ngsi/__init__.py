"""SMART PATH — NGSI-LD: sensors as ``Device`` and aggregates as ``NoiseLevelObserved``.

Pushes to the city's context broker and serves the history as a context source.
"""
