"""What the smart-path services share: their settings tree and database access.

Smart path = ``ingestion`` (MQTT -> PostgreSQL), ``ngsi`` (NGSI-LD), ``api`` (open data
and open event API), ``dashboards``. Nothing here, nor in those packages, may know of a
security event, a camera or an alert (import contracts in ``pyproject.toml``).
"""
