"""Protocol-faithful stand-ins for what cannot run on a developer machine or CI:
ONVIF PTZ cameras (SOAP + WS-Security), an NGSI-LD context broker (HTTP), and a
neighbourhood of sensors. Used by the demo, the tests and the benchmarks; they import
neither path's code, so the real clients are exercised against them.
"""
