"""Versioned wire messages shared by the edge agents and exactly one side each.

``level_frame`` is the smart path's message (sensor -> ingestion); ``security_event``
is the safe path's message (sensor -> safecity_bridge). They live here, outside both
sides, because the edge agent (``detectors``) produces both and each side validates
its own. The import contracts forbid the smart side from importing
``messages.security_event`` and the safe side from importing ``messages.level_frame``.
"""
