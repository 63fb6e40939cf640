"""The data-quality gate in front of every open-data export batch (great-expectations 1.x).

A batch is one dataset for one local day, as a DataFrame in the exact row order of the
file to be written. Expectations:

* value ranges: LAeq and percentiles within plausible dB(A) bounds, coverage in [0, 1],
  LA10 >= LA90 (a percentile inversion betrays a computation bug);
* completeness / coverage: key columns never null, mean coverage above the minimum,
  enough of the active sensors present;
* no duplicates on (sensor_id, time);
* monotonic time per sensor (the step to the previous row of the same sensor > 0).

``run_gate`` returns a JSON-ready report; the export publishes only when
``report["success"]`` is true, and keeps the report either way.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from api.settings import ExportSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GateSpec:
    """What one dataset is checked on."""

    dataset: str
    time_column: str
    value_columns: tuple[str, ...]
    percentile_pair: tuple[str, str] | None = None
    has_coverage: bool = True


SPECS: dict[str, GateSpec] = {
    "levels_1h": GateSpec("levels_1h", "bucket", ("laeq", "la10", "la50", "la90"), ("la10", "la90")),
    "levels_15min": GateSpec("levels_15min", "bucket", ("laeq", "la10", "la50", "la90"), ("la10", "la90")),
    "lden_daily": GateSpec("lden_daily", "day", ("lden", "lday", "levening", "lnight")),
}


def _expectations(spec: GateSpec, settings: ExportSettings, expected_sensors: int) -> list[Any]:
    import great_expectations.expectations as gxe

    lo, hi = settings.laeq_min_db, settings.laeq_max_db
    exps: list[Any] = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        gxe.ExpectColumnValuesToNotBeNull(column="sensor_id"),
        gxe.ExpectColumnValuesToNotBeNull(column=spec.time_column),
        gxe.ExpectColumnValuesToNotBeNull(column=spec.value_columns[0]),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["sensor_id", spec.time_column]),
        gxe.ExpectColumnValuesToBeBetween(column="step_s", min_value=0, strict_min=True),
        gxe.ExpectColumnUniqueValueCountToBeBetween(
            column="sensor_id", min_value=max(1, int(round(expected_sensors * settings.min_sensor_fraction)))),
    ]
    exps += [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=lo, max_value=hi) for c in spec.value_columns]
    if spec.has_coverage:
        exps.append(gxe.ExpectColumnValuesToBeBetween(column="coverage", min_value=0, max_value=1))
        exps.append(gxe.ExpectColumnMeanToBeBetween(column="coverage", min_value=settings.min_coverage, max_value=1))
    if spec.percentile_pair:
        a, b = spec.percentile_pair
        exps.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing"))
    return exps


def with_steps(frame: pd.DataFrame, time_column: str) -> pd.DataFrame:
    """Add ``step_s``: seconds since the previous row of the same sensor, in file order."""
    out = frame.copy()
    t = pd.to_datetime(out[time_column], utc=True)
    out["step_s"] = t.groupby(out["sensor_id"]).diff().dt.total_seconds()
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def run_gate(frame: pd.DataFrame, dataset: str, settings: ExportSettings, expected_sensors: int) -> dict[str, Any]:
    """Validate one batch; the report lists every expectation with its outcome."""
    import great_expectations as gx

    spec = SPECS[dataset]
    data = with_steps(frame, spec.time_column)
    for col in spec.value_columns + (("coverage",) if spec.has_coverage else ()):
        if col in data:
            data[col] = pd.to_numeric(data[col], errors="coerce")
    from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig

    # In memory, no telemetry (a city's export server has no business phoning home), no progress bars in logs.
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False))
    context = gx.get_context(mode="ephemeral", project_config=config)
    batch_def = context.data_sources.add_pandas("export").add_dataframe_asset(dataset).add_batch_definition_whole_dataframe("batch")
    suite = gx.ExpectationSuite(name=f"{dataset}-gate")
    for exp in _expectations(spec, settings, expected_sensors):
        suite.add_expectation(exp)
    result = batch_def.get_batch(batch_parameters={"dataframe": data}).validate(suite)
    checks = []
    for r in result.results:
        cfg = r.expectation_config
        kwargs = {k: v for k, v in cfg.kwargs.items() if k not in ("batch_id",)}
        detail = {k: r.result.get(k) for k in ("observed_value", "element_count", "unexpected_count", "unexpected_percent",
                                               "partial_unexpected_list") if k in r.result}
        checks.append({"expectation": cfg.type, "kwargs": _jsonable(kwargs), "success": bool(r.success), "result": _jsonable(detail)})
    failed = [c for c in checks if not c["success"]]
    log.info("quality gate %s: %d rows, %d/%d expectations failed", dataset, len(frame), len(failed), len(checks))
    return {
        "dataset": dataset,
        "rows": int(len(frame)),
        "expected_sensors": expected_sensors,
        "checked_at": dt.datetime.now(dt.UTC).isoformat(),
        "success": bool(result.success),
        "failed": [c["expectation"] + (f"({c['kwargs'].get('column') or c['kwargs'].get('column_list') or ''})") for c in failed],
        "checks": checks,
        "great_expectations": gx.__version__,
    }
