"""JSON Schemas of the wire messages, generated from the pydantic models (single source)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from messages.level_frame import LevelBatch, LevelFrame
from messages.security_event import SecurityEvent

BASE = "https://sonopolis.example.org/schemas/"


def export_all() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12), in 'validation' mode (what a receiver accepts)."""
    frame_or_batch = TypeAdapter(LevelFrame | LevelBatch).json_schema(by_alias=True)
    out = {
        "level-frame-v1.json": {"$id": BASE + "level-frame-v1.json", **LevelFrame.model_json_schema(by_alias=True)},
        "level-message-v1.json": {
            "$id": BASE + "level-message-v1.json",
            "title": "Sonopolis smart-broker message v1 (a frame or a batch)",
            **frame_or_batch,
        },
        "security-event-v1.json": {"$id": BASE + "security-event-v1.json", **SecurityEvent.model_json_schema(by_alias=True)},
    }
    for schema in out.values():
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return out
