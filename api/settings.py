"""Settings of the open-data API (``sonopolis api``) and of the open-data exports.

One sub-model per concern (rate limiting, exports, open events, transparency) so each
module receives only what it uses. Everything a city must decide (licence, data
controller, publication delay, event thresholds) is here, with bounds: a typo stops
the process at start-up instead of a default silently standing in.
"""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, IPvAnyNetwork, SecretStr, model_validator

LICENCES: dict[str, tuple[str, str]] = {
    "etalab-2.0": ("Licence Ouverte / Open Licence version 2.0", "https://www.etalab.gouv.fr/licence-ouverte-open-licence/"),
    "odbl-1.0": ("Open Database License (ODbL) v1.0", "https://opendatacommons.org/licenses/odbl/1-0/"),
}
"""Licences a French city may choose for open data (decree 2017-638 lists both)."""

SDM_ATTRIBUTION = "FIWARE Smart Data Models (smartdatamodels.org), CC-BY-4.0"
"""Attribution owed when data follows the NoiseLevelObserved/Device data models."""


class ExportSettings(BaseModel):
    """Daily open-data files, their metadata and the quality gate in front of them."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    directory: Path = Field(Path("var/opendata"), description="Where published daily files and catalogues are written")
    timezone: str = Field("Europe/Paris", description="Local zone defining an export day")
    publication_delay_h: float = Field(24.0, ge=0, le=24 * 30, description="Nothing more recent than this is published")
    licence: Literal["etalab-2.0", "odbl-1.0"] = Field("etalab-2.0", description="Licence of the published datasets")
    publisher: str = Field("Ville de Sonopolis", min_length=1, description="Publisher named in the DCAT-AP catalogue")
    publisher_uri: str = Field("https://www.example.org/", description="Publisher's web address")
    base_url: str = Field("http://127.0.0.1:8080", description="Public base URL used in download links")
    min_coverage: float = Field(0.5, ge=0, le=1, description="Quality gate: mean coverage of a day below this fails")
    min_sensor_fraction: float = Field(0.8, ge=0, le=1, description="Quality gate: share of active sensors that must report")
    laeq_min_db: float = Field(10.0, ge=-20, le=80, description="Quality gate: plausible lowest LAeq")
    laeq_max_db: float = Field(140.0, ge=60, le=200, description="Quality gate: plausible highest LAeq")


class OpenEventSettings(BaseModel):
    """Public noise events derived from the database (never a security class)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    laeq_5min_threshold_db: float = Field(
        75.0, ge=30, le=140,
        description="LAeq,5min (energetic, period-weighted mean of the window's measuring frames), rounded to 0.1 dB "
        "as published, above this raises `noise_threshold_exceeded` (what is published always visibly exceeds it)")
    laeq_5min_min_coverage: float = Field(
        0.9, ge=0.5, le=1,
        description="Share of the 5 min window that measuring frames (status ok or degraded) must cover before its "
        "LAeq is judged; below it the window raises nothing (one loud second is not a loud 5 minutes)")
    laeq_5min_settle_s: float = Field(
        120.0, ge=0, le=3600,
        description="A 5 min window is judged only this long after it ends, so frames still in transit count; "
        "its event, once raised, never changes")
    silent_after_min: float = Field(10.0, gt=0, le=24 * 60, description="A sensor with no frame for this long raises `sensor_silent`")
    evaluate_every_s: float = Field(30.0, gt=0, le=3600, description="Period of the evaluator loop")
    webhook_timeout_s: float = Field(5.0, gt=0, le=60, description="Per delivery attempt")
    webhook_max_attempts: int = Field(6, ge=1, le=20, description="Attempts before a delivery is given up (logged, kept)")
    webhook_backoff_initial_s: float = Field(1.0, gt=0, le=600)
    webhook_backoff_max_s: float = Field(300.0, gt=0, le=86_400)
    lookback_min: float = Field(30.0, ge=5, le=24 * 60, description="How far back each evaluation looks for complete 5 min windows")
    sse_poll_s: float = Field(1.0, gt=0, le=60, description="How often an SSE stream checks for new events")
    run_in_api: bool = Field(True, description="Run the evaluator and webhook dispatcher inside the API process")

    @model_validator(mode="after")
    def _every_window_is_judged(self) -> "OpenEventSettings":
        # A window can be judged from its end + settle until it leaves the lookback: a
        # lookback not longer than the settle delay (plus two evaluation periods) would let
        # windows pass unjudged, and their events would silently never exist.
        if self.lookback_min * 60 - self.laeq_5min_settle_s < 2 * self.evaluate_every_s:
            raise ValueError(
                f"lookback_min ({self.lookback_min} min) must exceed laeq_5min_settle_s ({self.laeq_5min_settle_s} s) "
                f"by at least two evaluation periods (2 x evaluate_every_s = {2 * self.evaluate_every_s} s)")
        return self


class TransparencySettings(BaseModel):
    """What the city tells residents (RGPD art. 12-14, CNIL guidance on acoustic sensors)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    controller: str = Field("Ville de Sonopolis", description="Data controller (responsable de traitement)")
    controller_address: str = Field("Hôtel de Ville, 1 place de la Mairie, 00000 Sonopolis")
    contact_email: str = Field("dpo@example.org", description="Contact of the data protection officer")
    cnil_url: str = Field("https://www.cnil.fr/fr/plaintes")
    raw_retention_days: int = Field(30, ge=1, le=3650, description="1 s levels kept this long")
    aggregate_retention_days: int = Field(3650, ge=1, le=36500, description="Aggregated levels kept this long")
    legal_basis: str = Field("RGPD art. 6(1)(e): mission d'intérêt public (bruit dans l'environnement, directive 2002/49/CE)")
    other_processing_notice: str | None = Field(
        None, max_length=4000,
        description="Text the city adds when it runs other processing on the same sensors (e.g. a declared security "
        "alerting service): residents must be told, and the open API knows nothing else about it",
    )


class ApiSettings(BaseModel):
    """Public, read-mostly HTTP service; write/admin routes need ``admin_token``."""

    model_config = ConfigDict(extra="forbid")  # a misspelt key is an error, not a silent default

    host: str = Field("127.0.0.1")
    port: int = Field(8080, ge=1, le=65535)
    admin_token: SecretStr | None = Field(None, description="Bearer token for write/admin routes (unset: they are refused)")
    rate_limit_per_minute: int = Field(600, ge=1, le=1_000_000, description="Per client IP on the public read API")
    rate_limit_burst: int = Field(60, ge=1, le=100_000, description="Requests a client may make at once")
    trust_forwarded_for: bool = Field(
        False, description="Behind a reverse proxy: believe X-Forwarded-For (client IP) and X-Forwarded-Proto (scheme "
        "of the URLs the API writes, e.g. the JSON-LD @context) when the connection comes from `trusted_proxies`")
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [ip_network("127.0.0.1/32"), ip_network("::1/128")],
        min_length=1,
        description="Addresses or CIDR networks of the proxies whose X-Forwarded-* headers are believed (with "
        "trust_forwarded_for); any other peer's are ignored, so a client that reaches the API directly cannot pick "
        'its address or scheme. Environment: a JSON list, e.g. \'["172.30.20.10"]\'')
    page_max_limit: int = Field(10_000, ge=10, le=1_000_000, description="Largest page (`limit`) a client may ask for on "
                                "the data routes: above it a 400; the OpenAPI document advertises it as the maximum")
    exports: ExportSettings = Field(default_factory=ExportSettings)
    events: OpenEventSettings = Field(default_factory=OpenEventSettings)
    transparency: TransparencySettings = Field(default_factory=TransparencySettings)
