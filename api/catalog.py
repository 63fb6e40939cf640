"""Open-data metadata: CSV layout, Frictionless ``datapackage.json`` and DCAT-AP ``catalog.jsonld``.

Both descriptors are rebuilt from the files actually on disk after each publication,
so they never list a file that a quality gate rejected. Column names, types, units and
descriptions are defined once here (``FIELDS``) and used for the CSV header, the
Frictionless table schema and the DCAT-AP dataset descriptions.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from api import precision
from api.render import spreadsheet_safe
from api.settings import LICENCES, SDM_ATTRIBUTION, ExportSettings

_LEVEL_FIELDS = [
    ("sensor_id", "string", "Sensor identifier (see sensors.csv)", None),
    ("bucket", "datetime", "Start of the aggregation interval (UTC, ISO 8601)", None),
    ("laeq", "number", "Equivalent continuous A-weighted level", "dB(A)"),
    ("lamax", "number", "Highest 1 s LAFmax in the interval", "dB(A)"),
    ("lamin", "number", "Lowest 1 s LAFmin in the interval", "dB(A)"),
    ("la10", "number", "Level exceeded 10 % of the time", "dB(A)"),
    ("la50", "number", "Median level", "dB(A)"),
    ("la90", "number", "Level exceeded 90 % of the time (background)", "dB(A)"),
    ("coverage", "number", "Share of seconds measured in the interval (0..1)", None),
    ("n_seconds", "integer", "Seconds measured", "s"),
    ("car_horn", "integer", "Car horns counted", None),
    ("siren", "integer", "Sirens counted", None),
]

FIELDS: dict[str, list[tuple[str, str, str, str | None]]] = {
    "levels_15min": _LEVEL_FIELDS,
    "levels_1h": _LEVEL_FIELDS,
    "lden_daily": [
        ("sensor_id", "string", "Sensor identifier (see sensors.csv)", None),
        ("day", "date", "Local day (Europe/Paris)", None),
        # period hours: France's (arrêté du 4 avril 2006), set in ingestion/aggregates.py and ingestion/aggsql.py
        ("lden", "number", "Day-evening-night level (Directive 2002/49/EC, periods of its French transposition, arrêté du"
                           " 4 avril 2006: day 06:00-18:00, evening 18:00-22:00, night 22:00-06:00 local; not the Directive's"
                           " default 07-19/19-23/23-07)", "dB(A)"),
        ("lday", "number", "Day level 06:00-18:00", "dB(A)"),
        ("levening", "number", "Evening level 18:00-22:00", "dB(A)"),
        ("lnight", "number", "Night level 22:00-06:00", "dB(A)"),
        ("coverage", "number", "Share of the day measured (0..1)", None),
    ],
    "sensors": [
        ("sensor_id", "string", "Sensor identifier", None),
        ("name", "string", "Name of the place", None),
        ("latitude", "number", "WGS84 latitude", "deg"),
        ("longitude", "number", "WGS84 longitude", "deg"),
        ("street", "string", "Street", None),
        ("place", "string", "Place / district", None),
        ("sonometer_class", "integer", "IEC 61672 class (1 or 2)", None),
        ("installed_on", "date", "Installation date", None),
        ("timezone", "string", "Time zone of the sensor", None),
        ("active", "boolean", "Currently in service", None),
    ],
}

TITLES = {
    "levels_15min": ("Niveaux sonores par quart d'heure", "Noise levels per 15 minutes"),
    "levels_1h": ("Niveaux sonores horaires", "Hourly noise levels"),
    "lden_daily": ("Indicateurs Lden journaliers", "Daily Lden indicators"),
    "sensors": ("Capteurs acoustiques", "Acoustic sensors"),
}

_KEYS = {"levels_15min": ["sensor_id", "bucket"], "levels_1h": ["sensor_id", "bucket"], "lden_daily": ["sensor_id", "day"], "sensors": ["sensor_id"]}
_FILE = re.compile(r"^(?P<dataset>[a-z0-9_]+)_(?P<day>\d{4}-\d{2}-\d{2})\.csv$")


def columns(dataset: str) -> tuple[str, ...]:
    return tuple(f[0] for f in FIELDS[dataset])


def table_schema(dataset: str) -> dict[str, Any]:
    fields = []
    for name, typ, desc, unit in FIELDS[dataset]:
        f: dict[str, Any] = {"name": name, "type": typ, "description": desc + (f" [{unit}]" if unit else "")}
        if name in ("sensor_id", "bucket", "day"):
            f["constraints"] = {"required": True}
        fields.append(f)
    return {"fields": fields, "primaryKey": _KEYS[dataset], "missingValues": [""]}


def to_csv(dataset: str, frame: pd.DataFrame) -> str:
    out = frame.loc[:, list(columns(dataset))].copy()
    for name, typ, _, unit in FIELDS[dataset]:
        if typ == "datetime":
            out[name] = pd.to_datetime(out[name], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        elif typ == "date":
            out[name] = out[name].map(lambda d: d.isoformat() if isinstance(d, dt.date) else ("" if pd.isna(d) else str(d)))
        elif typ == "number":
            # The rule of api.precision, as the data routes apply it: positions rounded to 2
            # decimals like the levels had put every sensor of a city at one point.
            out[name] = pd.to_numeric(out[name], errors="coerce").map(_number_rule(name, unit))
        elif typ == "string":
            out[name] = out[name].map(lambda v: v if not isinstance(v, str) else spreadsheet_safe(v))
        elif typ == "integer":
            out[name] = pd.to_numeric(out[name], errors="coerce").astype("Int64")
        elif typ == "boolean":
            out[name] = out[name].map(lambda b: "" if b is None else ("true" if b else "false"))
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator="\n", na_rep="")
    return buf.getvalue()


def _number_rule(name: str, unit: str | None) -> Callable[[float | None], float | None]:
    """Rounding of a numeric column: degrees, ratios (``coverage``) or levels (dB)."""
    if unit == "deg":
        return precision.degrees
    if name == "coverage":
        return precision.ratio
    return precision.level


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file then rename: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _published(root: Path) -> list[tuple[str, dt.date | None, Path]]:
    found: list[tuple[str, dt.date | None, Path]] = []
    if (root / "sensors.csv").is_file():
        found.append(("sensors", None, root / "sensors.csv"))
    for dataset in ("levels_15min", "levels_1h", "lden_daily"):
        for path in sorted((root / dataset).glob("*.csv")) if (root / dataset).is_dir() else []:
            m = _FILE.match(path.name)
            if m and m.group("dataset") == dataset:
                found.append((dataset, dt.date.fromisoformat(m.group("day")), path))
    return found


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def datapackage(root: Path, settings: ExportSettings) -> dict[str, Any]:
    name, url = LICENCES[settings.licence]
    resources = []
    for dataset, day, path in _published(root):
        res_name = dataset if day is None else f"{dataset}_{day.isoformat()}"
        resources.append({
            "name": res_name.replace("_", "-"), "path": str(path.relative_to(root)), "profile": "tabular-data-resource",
            "title": TITLES[dataset][1] + (f" {day.isoformat()}" if day else ""), "format": "csv", "mediatype": "text/csv",
            "encoding": "utf-8", "bytes": path.stat().st_size, "hash": f"sha256:{_sha256(path)}", "schema": table_schema(dataset),
        })
    return {
        "name": "sonopolis-noise", "title": "Sonopolis — open noise data", "profile": "tabular-data-package",
        "description": "Anonymous aggregated noise levels from the city's acoustic sensors. No audio is recorded, stored or transmitted.",
        "licenses": [{"name": settings.licence, "path": url, "title": name}],
        "sources": [{"title": SDM_ATTRIBUTION, "path": "https://smartdatamodels.org"}],
        "contributors": [{"title": settings.publisher, "path": settings.publisher_uri, "role": "publisher"}],
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "resources": resources,
    }


WKT_LITERAL = "http://www.opengis.net/ont/geosparql#wktLiteral"


def spatial_coverage(root: Path) -> dict[str, Any] | None:
    """DCAT-AP ``dct:spatial`` of the published sensors: the WGS84 extent of ``sensors.csv`` as it was published.

    Harvesters (data.gouv.fr, the EU portal) place a dataset on a map from it. Read from the
    published file, so it never shows a position finer than the 1e-6 degree published there.
    A single position has no area: it is given as ``dcat:centroid`` instead of a box.
    """
    path = root / "sensors.csv"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8", newline="") as fh:
        points = [(float(r["longitude"]), float(r["latitude"])) for r in csv.DictReader(fh) if r.get("longitude") and r.get("latitude")]
    if not points:
        return None
    (w, e), (s, n) = (min(p[0] for p in points), max(p[0] for p in points)), (min(p[1] for p in points), max(p[1] for p in points))
    if w == e or s == n:
        return {"@type": "dct:Location", "dcat:centroid": {"@value": f"POINT({(w + e) / 2} {(s + n) / 2})", "@type": WKT_LITERAL}}
    return {"@type": "dct:Location",
            "dcat:bbox": {"@value": f"POLYGON(({w} {s}, {e} {s}, {e} {n}, {w} {n}, {w} {s}))", "@type": WKT_LITERAL}}


def dcat_catalog(root: Path, settings: ExportSettings) -> dict[str, Any]:
    """DCAT-AP 3.0 catalogue as JSON-LD: one dataset per family, one distribution per file."""
    lic_name, lic_url = LICENCES[settings.licence]
    base = settings.base_url.rstrip("/") + "/v1/opendata/files/"
    by_dataset: dict[str, list[tuple[dt.date | None, Path]]] = {}
    for dataset, day, path in _published(root):
        by_dataset.setdefault(dataset, []).append((day, path))
    spatial = spatial_coverage(root)
    datasets = []
    for dataset, files in by_dataset.items():
        days = [d for d, _ in files if d]
        fr, en = TITLES[dataset]
        ds: dict[str, Any] = {
            "@id": f"{settings.base_url.rstrip('/')}/v1/opendata/datasets/{dataset}", "@type": "dcat:Dataset",
            "dct:identifier": f"sonopolis-{dataset}",
            "dct:title": [{"@value": fr, "@language": "fr"}, {"@value": en, "@language": "en"}],
            "dct:description": [{"@value": en + " from anonymous acoustic sensors (aggregates only, no audio).", "@language": "en"}],
            "dcat:keyword": ["bruit", "noise", "environnement", "NoiseLevelObserved"],
            "dct:publisher": {"@id": settings.publisher_uri},
            "dct:license": {"@id": lic_url},
            "dct:rights": {"@type": "dct:RightsStatement", "rdfs:label": SDM_ATTRIBUTION},
            "dct:conformsTo": {"@id": "https://github.com/smart-data-models/dataModel.Environment/tree/master/NoiseLevelObserved"},
            "dct:accrualPeriodicity": {"@id": "http://publications.europa.eu/resource/authority/frequency/DAILY"},
            "dcat:theme": {"@id": "http://publications.europa.eu/resource/authority/data-theme/ENVI"},
            "dcat:distribution": [{
                "@type": "dcat:Distribution", "dct:title": path.name, "dcat:downloadURL": {"@id": base + str(path.relative_to(root))},
                "dcat:accessURL": {"@id": base + str(path.relative_to(root))},
                "dcat:mediaType": {"@id": "http://www.iana.org/assignments/media-types/text/csv"},
                "dct:format": {"@id": "http://publications.europa.eu/resource/authority/file-type/CSV"},
                # DCAT-AP 3.0: byteSize is an xsd:nonNegativeInteger (it was typed xsd:decimal), and a
                # Distribution has no dct:temporal: the Dataset's period below covers its files, and
                # each file's day is in its title and URL.
                "dct:license": {"@id": lic_url}, "dcat:byteSize": {"@value": str(path.stat().st_size), "@type": "xsd:nonNegativeInteger"},
                "spdx:checksum": {"@type": "spdx:Checksum", "spdx:algorithm": {"@id": "spdx:checksumAlgorithm_sha256"}, "spdx:checksumValue": _sha256(path)},
            } for _, path in files],
        }
        if spatial:
            ds["dct:spatial"] = spatial
        if days:
            ds["dct:temporal"] = {"@type": "dct:PeriodOfTime", "dcat:startDate": {"@value": min(days).isoformat(), "@type": "xsd:date"},
                                  "dcat:endDate": {"@value": max(days).isoformat(), "@type": "xsd:date"}}
        datasets.append(ds)
    return {
        "@context": {"dcat": "http://www.w3.org/ns/dcat#", "dct": "http://purl.org/dc/terms/", "foaf": "http://xmlns.com/foaf/0.1/",
                     "rdfs": "http://www.w3.org/2000/01/rdf-schema#", "xsd": "http://www.w3.org/2001/XMLSchema#",
                     "spdx": "http://spdx.org/rdf/terms#", "vcard": "http://www.w3.org/2006/vcard/ns#"},
        "@id": settings.base_url.rstrip("/") + "/v1/opendata/catalog.jsonld", "@type": "dcat:Catalog",
        "dct:title": [{"@value": "Données ouvertes sur le bruit", "@language": "fr"}, {"@value": "Open noise data", "@language": "en"}],
        "dct:description": [{"@value": "Anonymous aggregated noise levels; published after a data-quality gate, "
                             f"at least {settings.publication_delay_h:g} h after the end of each day.", "@language": "en"}],
        "dct:publisher": {"@id": settings.publisher_uri, "@type": "foaf:Agent", "foaf:name": settings.publisher},
        "dct:license": {"@id": lic_url, "@type": "dct:LicenseDocument", "rdfs:label": lic_name},
        "dct:modified": {"@value": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "@type": "xsd:dateTime"},
        "foaf:homepage": {"@id": settings.base_url},
        "dcat:dataset": datasets,
    }


def write_metadata(root: Path, settings: ExportSettings) -> None:
    """Rewrite both descriptors from the published files (atomic replace)."""
    atomic_write(root / "datapackage.json", json.dumps(datapackage(root, settings), indent=2, ensure_ascii=False).encode())
    atomic_write(root / "catalog.jsonld", json.dumps(dcat_catalog(root, settings), indent=2, ensure_ascii=False).encode())


def validate_package(root: Path) -> dict[str, Any]:
    """Frictionless validation of ``datapackage.json`` and every CSV against its schema."""
    from frictionless import validate

    report = validate(str(root / "datapackage.json"))
    return {"valid": report.valid, "errors": [e.message for task in report.tasks for e in task.errors][:50]}
