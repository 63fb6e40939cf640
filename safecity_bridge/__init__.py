"""SAFE PATH — isolated security alerts to ONVIF PTZ cameras and the security control room.

Disabled unless the operator declares a legal basis and a DPIA. Its own process,
broker credentials, database role/schema and HTTP port; it imports nothing from the
smart side and publishes nothing.
"""
