"""Offline validators for the official Smart Data Model schemas in ``../shared/ngsi``."""

from __future__ import annotations

import json
from pathlib import Path

from jsonschema import Draft202012Validator
from referencing import Registry, Resource


def validator(shared_dir: Path, schema_url: str) -> Draft202012Validator:
    """A Draft 2020-12 validator with a format checker, resolving ``$ref`` through url-map.json."""
    root = shared_dir / "ngsi"
    url_map = json.loads((root / "url-map.json").read_text())["json-schema"]
    registry: Registry = Registry()
    for url, rel in url_map.items():
        registry = registry.with_resource(url, Resource.from_contents(json.loads((root / rel).read_text())))
    schema = json.loads((root / url_map[schema_url]).read_text())
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


NOISE_SCHEMA = "https://smart-data-models.github.io/dataModel.Environment/NoiseLevelObserved/schema.json"
DEVICE_SCHEMA = "https://smart-data-models.github.io/dataModel.Device/Device/schema.json"
