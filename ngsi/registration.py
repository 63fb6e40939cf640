"""The ``csourceRegistration`` a city POSTs to its broker to register Sonopolis as a context source.

``POST /ngsi-ld/v1/csourceRegistrations`` (Content-Type ``application/ld+json``) on
Orion-LD / Scorpio / Stellio. The broker then forwards queries on
``NoiseLevelObserved`` to ``endpoint`` (this API) instead of holding the history itself.
"""

from __future__ import annotations

from typing import Any

MEASURED = ["LAeq", "LAmax", "LAmin", "LA10", "LA50", "LA90", "LAeq_d", "LANight", "Levening", "Lden",
            "thirdOctaveBands", "coverage", "carHornCount", "sirenCount"]
STATIC = ["location", "dateObserved", "dateObservedFrom", "dateObservedTo", "sonometerClass", "aggregationPeriod"]


def registration_example(endpoint: str, context_url: str, *, registration_id: str = "urn:ngsi-ld:ContextSourceRegistration:sonopolis-noise") -> dict[str, Any]:
    """Registration for every ``NoiseLevelObserved`` served at ``endpoint`` (base URL, no ``/ngsi-ld/v1``)."""
    return {
        "id": registration_id,
        "type": "ContextSourceRegistration",
        "description": "Sonopolis: anonymous aggregate noise levels (1 min .. 1 day) served from the city's noise database",
        "information": [
            {
                "entities": [{"type": "NoiseLevelObserved"}],
                "propertyNames": MEASURED + STATIC,
                "relationshipNames": ["refDevice"],
            }
        ],
        "endpoint": endpoint,
        "mode": "inclusive",
        "operations": ["retrieveOps"],
        "contextSourceInfo": [{"key": "jsonldContext", "value": context_url}],
        "@context": [context_url],
    }
