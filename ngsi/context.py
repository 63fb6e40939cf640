"""JSON-LD ``@context`` of the Sonopolis entities, and the terms it adds.

The FIWARE Environment context defines ``LAeq``, ``LAmax``, ``LAS``, ``LAeq_d``,
``LANight``, ``dateObservedFrom``/``To``, ``sonometerClass`` and ``refDevice``; the
Device context defines ``controlledProperty``, ``deviceCategory``, ... Sonopolis also
publishes percentiles, ``Lden`` and its components, third-octave bands, coverage and
counts of non-security sources: without a definition those would silently expand to
the ETSI *default* context (``https://uri.etsi.org/ngsi-ld/default-context/LA90``) and
mean nothing to anyone. They are defined here, under a vocabulary IRI that is the same
in every city (so a query across cities means the same thing), in a context document
that the API serves at a stable URL (``NgsiSettings.context_url``).

The document is a composite: Device context, Environment context, then the Sonopolis
terms. One URL therefore covers everything an entity uses, which is what a ``Link``
header (one context only) needs. The NGSI-LD core context is implicit (CIM 009 §5.5.7).
"""

from __future__ import annotations

from typing import Any

ENVIRONMENT_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Environment/master/context.jsonld"
DEVICE_CONTEXT = "https://raw.githubusercontent.com/smart-data-models/dataModel.Device/master/context.jsonld"
CORE_CONTEXT = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld"

VOCAB = "https://sonopolis.eu/ns/noise/v1#"
"""Namespace of the Sonopolis terms. Never per deployment: changing it changes their meaning."""

LINK_REL = "http://www.w3.org/ns/json-ld#context"

SONOPOLIS_TERMS: dict[str, str] = {
    "LA10": "A-weighted level exceeded 10 % of the time in the period (from 1 s LAeq values), dB",
    "LA50": "A-weighted median level in the period (from 1 s LAeq values), dB",
    "LA90": "A-weighted level exceeded 90 % of the time (background noise), dB",
    "LAmin": "Lowest 1 s A-weighted level in the period, dB",
    # period hours set in ingestion/aggregates.py (_lden_statement) and ingestion/aggsql.py (TimescaleDB)
    "Lden": "Day-evening-night level (Directive 2002/49/EC, +5/+10 dB penalties) with the periods of its French transposition"
            " (arrêté du 4 avril 2006): day 06:00-18:00, evening 18:00-22:00, night 22:00-06:00 local, not the Directive's"
            " default 07-19/19-23/23-07, dB",
    "Levening": "LAeq over the evening period 18:00-22:00 local, dB",
    "thirdOctaveBands": "Energetic mean level per IEC 61260-1 third-octave band, object keyed by nominal centre in Hz, dB",
    "coverage": "Seconds of data present / seconds in the period (0..1)",
    "carHornCount": "Number of car horns detected in the period (anonymous count, no audio)",
    "sirenCount": "Number of emergency sirens detected in the period (anonymous count, no audio)",
    "aggregationPeriod": "Length of the observation period as an ISO 8601 duration (PT1M, PT15M, PT1H, P1D)",
}


def context_document() -> dict[str, Any]:
    """The document served at ``NgsiSettings.context_url`` (``application/ld+json``)."""
    terms: dict[str, Any] = {"sonopolis": VOCAB}
    terms.update({term: f"{VOCAB}{term}" for term in SONOPOLIS_TERMS})
    return {"@context": [DEVICE_CONTEXT, ENVIRONMENT_CONTEXT, terms]}


def link_header(context_url: str) -> str:
    """``Link`` header that carries the context of an ``application/json`` body."""
    return f'<{context_url}>; rel="{LINK_REL}"; type="application/ld+json"'


def parse_link_header(value: str) -> str | None:
    """The context URL of a ``Link`` header, or None when it has no JSON-LD context link."""
    for part in value.split(","):
        url, _, params = part.strip().partition(";")
        url = url.strip()
        if not (url.startswith("<") and url.endswith(">")):
            continue
        if f'rel="{LINK_REL}"' in params.replace(" ", "") or f"rel={LINK_REL}" in params.replace(" ", ""):
            return url[1:-1]
    return None
