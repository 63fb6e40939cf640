"""Each incident as an ONVIF-style audio-analytics event, for existing video-management systems.

A VMS that already understands ONVIF metadata can consume our incidents without custom
code: we build the ``tt:MetadataStream`` / ``tt:Event`` / ``wsnt:NotificationMessage``
it would receive from an ONVIF device with audio analytics, on topic
``tns1:AudioAnalytics/Audio/DetectedSound``, whose data item ``AudioClass`` holds a
``tt:AudioClassDescriptor`` (``ClassCandidate`` = ``Type`` + ``Likelihood``).

ONVIF's audio classes (``tt:AudioClassType``) are ``gun_shot``, ``scream``,
``glass_breaking`` and ``tire_screech``. Our classes map as follows:

=============  ===============  ==================================================
Sonopolis      ONVIF            note
=============  ===============  ==================================================
gunshot        gun_shot
scream         scream
glass_break    glass_breaking
crash          (none)           a crash is not a tire screech (which may precede
                                it); claiming so would mislead a VMS rule
spray_can      (none)           no ONVIF class
explosion      (none)           no ONVIF class (not a gun_shot)
=============  ===============  ==================================================

Unmapped classes are sent with no ONVIF ``ClassCandidate`` and our class name in the
descriptor's ``tt:Extension`` (namespace ``urn:sonopolis:onvif-ext:1``), so a VMS rule on
ONVIF classes never fires on a guess. The message carries the incident id, position and
uncertainty as ``SimpleItem``s; never audio.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from typing import Any

NS = {
    "tt": "http://www.onvif.org/ver10/schema",
    "wsnt": "http://docs.oasis-open.org/wsn/b-2",
    "tns1": "http://www.onvif.org/ver10/topics",
    "son": "urn:sonopolis:onvif-ext:1",
}
TOPIC = "tns1:AudioAnalytics/Audio/DetectedSound"
TOPIC_DIALECT = "http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet"
ONVIF_AUDIO_CLASSES = ("gun_shot", "scream", "glass_breaking", "tire_screech")

CLASS_MAP: dict[str, str | None] = {
    "gunshot": "gun_shot",
    "scream": "scream",
    "glass_break": "glass_breaking",
    "crash": None,
    "spray_can": None,
    "explosion": None,
}

for _prefix, _uri in NS.items():
    ET.register_namespace(_prefix, _uri)


def _q(prefix: str, name: str) -> str:
    return f"{{{NS[prefix]}}}{name}"


def onvif_class(event_class: str) -> str | None:
    """The ONVIF audio class for one of ours, or None when there is no honest match."""
    if event_class not in CLASS_MAP:
        raise ValueError(f"unknown security class {event_class!r}")
    return CLASS_MAP[event_class]


def _utc(value: str | datetime) -> str:
    dt = datetime.fromisoformat(value) if isinstance(value, str) else value
    return dt.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notification_message(incident: dict[str, Any]) -> ET.Element:
    """The ``wsnt:NotificationMessage`` for one incident (a dict as published on the feed)."""
    msg = ET.Element(_q("wsnt", "NotificationMessage"))
    topic = ET.SubElement(msg, _q("wsnt", "Topic"), {"Dialect": TOPIC_DIALECT})
    topic.text = TOPIC
    body = ET.SubElement(msg, _q("wsnt", "Message"))
    tmsg = ET.SubElement(body, _q("tt", "Message"), {"UtcTime": _utc(incident["first_onset"]), "PropertyOperation": "Initialized"})
    source = ET.SubElement(tmsg, _q("tt", "Source"))
    for sid in incident["sensor_ids"]:
        ET.SubElement(source, _q("tt", "SimpleItem"), {"Name": "AudioSourceToken", "Value": sid})
    key = ET.SubElement(tmsg, _q("tt", "Key"))
    ET.SubElement(key, _q("tt", "SimpleItem"), {"Name": "IncidentId", "Value": incident["incident_id"]})
    data = ET.SubElement(tmsg, _q("tt", "Data"))
    item = ET.SubElement(data, _q("tt", "ElementItem"), {"Name": "AudioClass"})
    desc = ET.SubElement(item, _q("tt", "AudioClassDescriptor"))
    ours = incident["event_class"]
    mapped = onvif_class(ours)
    if mapped is not None:
        cand = ET.SubElement(desc, _q("tt", "ClassCandidate"))
        ET.SubElement(cand, _q("tt", "Type")).text = mapped
        ET.SubElement(cand, _q("tt", "Likelihood")).text = f"{float(incident.get('confidence', 1.0)):.3f}"
    ext = ET.SubElement(desc, _q("tt", "Extension"))
    ET.SubElement(ext, _q("son", "SonopolisClass")).text = ours
    for name, value in (
        ("Latitude", f"{incident['latitude']:.6f}"),
        ("Longitude", f"{incident['longitude']:.6f}"),
        ("UncertaintyMetres", f"{incident['uncertainty_m']:.1f}"),
        ("LocateMethod", incident["locate_method"]),
    ):
        ET.SubElement(data, _q("tt", "SimpleItem"), {"Name": name, "Value": value})
    return msg


def metadata_stream(incidents: list[dict[str, Any]]) -> bytes:
    """``tt:MetadataStream`` with one ``tt:Event`` per incident, as a device would stream it."""
    root = ET.Element(_q("tt", "MetadataStream"))
    for inc in incidents:
        ev = ET.SubElement(root, _q("tt", "Event"))
        ev.append(notification_message(inc))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
