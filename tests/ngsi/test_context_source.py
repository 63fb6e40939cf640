"""The NGSI-LD context source over real PostgreSQL (contract tables filled directly), through ASGITransport."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone

import httpx
import psycopg
import pytest

from ngsi.context import parse_link_header
from ngsi.mapping import published_round
from sonopolis.bootstrap import RoleDsns
from tests.ngsi import seed

pytestmark = pytest.mark.anyio

T0 = datetime(2024, 6, 10, 0, 0, tzinfo=timezone.utc)
NOISE = "NoiseLevelObserved"
ERR = "https://uri.etsi.org/ngsi-ld/errors/"


@pytest.fixture
async def api(db: RoleDsns) -> AsyncIterator[httpx.AsyncClient]:
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
        seed.add_aggregates(conn, "levels_1min", T0, timedelta(minutes=1), 120)
        seed.add_aggregates(conn, "levels_1h", T0, timedelta(hours=1), 24)
        seed.add_aggregates(conn, "levels_1d", datetime(2024, 6, 9, 22, tzinfo=timezone.utc), timedelta(days=1), 2)
        seed.add_lden(conn, date(2024, 6, 10))
    async with seed.context_source(db.smart) as client:
        yield client


async def get(api: httpx.AsyncClient, path: str, **params: object) -> httpx.Response:
    return await api.get(path, params={k: str(v) for k, v in params.items()})


async def test_entities_by_type_newest_first_with_link_context_and_count(api: httpx.AsyncClient) -> None:
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, limit=5, count="true")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert parse_link_header(r.headers["link"]) == "http://sonopolis.test/ngsi-ld/contexts/sonopolis.jsonld"
    total = 3 * (120 + 24 + 2)
    assert r.headers["NGSILD-Results-Count"] == str(total)
    body = r.json()
    assert len(body) == 5 and all("@context" not in e for e in body)
    starts = [e["dateObservedFrom"]["value"]["@value"] for e in body]
    assert starts == sorted(starts, reverse=True)
    assert 'rel="next"' in r.headers["link"] and "offset=5" in r.headers["link"]
    # pages do not overlap and cover everything
    seen: set[str] = set()
    for offset in range(0, total, 100):
        page = (await get(api, "/ngsi-ld/v1/entities", type=NOISE, limit=100, offset=offset)).json()
        seen |= {e["id"] for e in page}
    assert len(seen) == total


async def test_ld_json_has_context_in_body(api: httpx.AsyncClient) -> None:
    r = await api.get("/ngsi-ld/v1/entities", params={"type": NOISE, "limit": 1}, headers={"Accept": "application/ld+json"})
    assert r.headers["content-type"].startswith("application/ld+json")
    assert r.json()[0]["@context"] == ["http://sonopolis.test/ngsi-ld/contexts/sonopolis.jsonld"]
    assert "link" not in r.headers or "json-ld#context" not in r.headers["link"]
    ctx = await api.get("/ngsi-ld/contexts/sonopolis.jsonld")
    assert ctx.headers["content-type"].startswith("application/ld+json") and "LA90" in ctx.json()["@context"][-1]
    bad = await api.get("/ngsi-ld/v1/entities", params={"type": NOISE}, headers={"Accept": "text/html"})
    assert bad.status_code == 406 and bad.json()["type"] == ERR + "NotAcceptable"


async def test_q_comparisons_match_the_published_values(api: httpx.AsyncClient) -> None:
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, q='LAeq>70;aggregationPeriod=="PT1H"', limit=100, count="true")
    body = r.json()
    expected = sum(1 for si in range(3) for k in range(24) if seed.level(si, k) > 70)
    assert int(r.headers["NGSILD-Results-Count"]) == expected == len(body) > 0
    assert all(e["LAeq"]["value"] > 70 and e["aggregationPeriod"]["value"] == "PT1H" for e in body)
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, q='(LAeq<52|LAeq>=79);sonometerClass=="2";aggregationPeriod=="PT1H"', limit=100)
    body = r.json()
    assert body and all(e["refDevice"]["object"] == "urn:ngsi-ld:Device:se-chavanelle" for e in body)
    assert all(e["LAeq"]["value"] < 52 or e["LAeq"]["value"] >= 79 for e in body)
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, q="Lden==60..65.5", limit=100)
    assert [e["Lden"]["value"] for e in r.json()] == [65.0]
    for q in ("LAeq>>3", "LAeq>loud", "(LAeq>1"):
        r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, q=q)
        assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", q


TIE_LEVELS = {"LAeq": 60.25, "LAmax": 70.15, "LAmin": 40.45, "LA10": 63.35, "LA50": 59.05, "LA90": 45.65}
"""0.05 dB ties stored as real: 60.25 exact in binary, the others a hair below or above as float4."""


@pytest.fixture
async def tie_api(db: RoleDsns) -> AsyncIterator[httpx.AsyncClient]:
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn, seed.SENSORS[:1])
        conn.execute(
            "INSERT INTO smart.levels_1h (sensor_id, bucket, laeq, lamax, lamin, la10, la50, la90, bands, coverage, n_seconds,"
            " car_horn, siren) VALUES ('se-jacquard', %s, %s, %s, %s, %s, %s, %s, NULL, 0.95835, 3450, 0, 0)",
            (T0, *TIE_LEVELS.values()),
        )
        conn.execute("INSERT INTO smart.lden_daily (sensor_id, day, lden, lday, levening, lnight, coverage)"
                     " VALUES ('se-jacquard', '2024-06-10', 64.45, 62.25, 59.05, 50.15, 0.99)")
        conn.execute("INSERT INTO smart.levels_1d (sensor_id, bucket, laeq, lamax, lamin, la10, la50, la90, bands, coverage,"
                     " n_seconds, car_horn, siren) VALUES ('se-jacquard', '2024-06-09T22:00:00Z', 60, 70, 40, 63, 59, 45, NULL,"
                     " 1, 86400, 0, 0)")
    async with seed.context_source(db.smart) as client:
        yield client


async def test_q_compares_ties_exactly_as_published(tie_api: httpx.AsyncClient) -> None:
    """A 0.05 dB tie is published and compared by one rule (half up on the real's decimal)."""
    hourly = 'aggregationPeriod=="PT1H"'
    (ent,) = (await get(tie_api, "/ngsi-ld/v1/entities", type=NOISE, q=hourly, options="keyValues")).json()
    published = {k: ent[k] for k in TIE_LEVELS}
    for attr, value in [*published.items(), ("coverage", ent["coverage"])]:
        step = 0.0001 if attr == "coverage" else 0.1
        below, above = round(value - step, 4), round(value + step, 4)
        for q, n in ((f"{attr}=={value}", 1), (f"{attr}=={below}", 0), (f"{attr}=={above}", 0),
                     (f"{attr}>={value}", 1), (f"{attr}>{value}", 0), (f"{attr}<={value}", 1), (f"{attr}<{value}", 0),
                     (f"{attr}!={value}", 0), (f"{attr}=={below}..{value}", 1), (f"{attr}=={above},{value}", 1)):
            got = (await get(tie_api, "/ngsi-ld/v1/entities", type=NOISE, q=f"{q};{hourly}")).json()
            assert len(got) == n, (q, got)
        # the temporal view publishes the same values and filters its instances by the same rule
        r = await get(tie_api, "/ngsi-ld/v1/temporal/entities", id="urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H",
                      timerel="after", timeAt="2024-06-01T00:00:00Z", q=f"{attr}=={value}", attrs=attr)
        (series,) = r.json()
        assert [i["value"] for i in series[attr]] == [value]
        r = await get(tie_api, "/ngsi-ld/v1/temporal/entities", id="urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H",
                      timerel="after", timeAt="2024-06-01T00:00:00Z", q=f"{attr}=={below}", attrs=attr)
        assert r.json() == []
    # the rule itself: half up on the decimal PostgreSQL's numeric cast gives (not half-even on the binary)
    assert published == {"LAeq": 60.3, "LAmax": 70.2, "LAmin": 40.5, "LA10": 63.4, "LA50": 59.1, "LA90": 45.7}
    assert ent["coverage"] == 0.9584
    one = (await get(tie_api, "/ngsi-ld/v1/entities/urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T00:00:00Z")).json()
    assert {k: one[k]["value"] for k in TIE_LEVELS} == published
    # daily Lden attributes: 64.45 -> 64.5, 62.25 -> 62.3, 59.05 -> 59.1, 50.15 -> 50.2
    (day,) = (await get(tie_api, "/ngsi-ld/v1/entities", type=NOISE, q='aggregationPeriod=="P1D"', options="keyValues")).json()
    assert (day["Lden"], day["LAeq_d"], day["Levening"], day["LANight"]) == (64.5, 62.3, 59.1, 50.2)
    for q in ("Lden==64.5", "LAeq_d==62.3", "Levening==59.1", "LANight==50.2"):
        assert len((await get(tie_api, "/ngsi-ld/v1/entities", type=NOISE, q=q)).json()) == 1, q
    for q in ("Lden==64.4", "LAeq_d==62.2", "Levening==59.0", "LANight==50.1"):
        assert (await get(tie_api, "/ngsi-ld/v1/entities", type=NOISE, q=q)).json() == [], q


async def test_georel_near_and_within(api: httpx.AsyncClient) -> None:
    # 1.5 km around Place Jacquard, Saint-Étienne: Jacquard and Chavanelle (~600 m), not Lyon
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, georel="near;maxDistance==1500", geometry="Point",
                  coordinates="[4.3872,45.4397]", q='aggregationPeriod=="P1D"', limit=100)
    assert sorted(e["refDevice"]["object"] for e in r.json()) == ["urn:ngsi-ld:Device:se-chavanelle"] * 2 + ["urn:ngsi-ld:Device:se-jacquard"] * 2
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, georel="near;maxDistance==300", geometry="Point",
                  coordinates="[4.3872,45.4397]", q='aggregationPeriod=="P1D"', limit=100)
    assert {e["refDevice"]["object"] for e in r.json()} == {"urn:ngsi-ld:Device:se-jacquard"}
    lyon = "[[[4.80,45.74],[4.86,45.74],[4.86,45.78],[4.80,45.78],[4.80,45.74]]]"
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, georel="within", geometry="Polygon", coordinates=lyon,
                  q='aggregationPeriod=="P1D"', limit=100)
    assert {e["refDevice"]["object"] for e in r.json()} == {"urn:ngsi-ld:Device:lyon-bellecour"}
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, georel="near", geometry="Point", coordinates="[4.38,45.43]")
    assert r.status_code == 400


async def test_unknown_paths_and_unsupported_methods_answer_ngsi_ld_problem_details(api: httpx.AsyncClient) -> None:
    """A broker or client reading errors by their ETSI type got FastAPI's ``{"detail": ...}``
    for a path or a method the context source does not serve: 404 ResourceNotFound, and 405
    (with Allow, RFC 9110) typed OperationNotSupported, in the module's ProblemDetails."""
    for method, path in (("GET", "/ngsi-ld/v1/subscriptions"), ("POST", "/ngsi-ld/v1/entityOperations/upsert"), ("GET", "/ngsi-ld/v1/")):
        r = await api.request(method, path)
        assert r.status_code == 404 and r.headers["content-type"].startswith("application/json"), (method, path, r.status_code, r.text)
        assert r.json() == {"type": ERR + "ResourceNotFound", "title": "Resource not found", "status": 404, "detail": f"{path}: no such NGSI-LD resource here"}
    eid = "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T05:00:00Z"
    for method, path in (("POST", "/ngsi-ld/v1/entities"), ("DELETE", f"/ngsi-ld/v1/entities/{eid}"), ("PATCH", f"/ngsi-ld/v1/entities/{eid}"),
                         ("PUT", "/ngsi-ld/v1/temporal/entities"), ("POST", "/ngsi-ld/contexts/sonopolis.jsonld")):
        r = await api.request(method, path, json={"id": eid, "type": NOISE})
        assert r.status_code == 405 and r.headers["content-type"].startswith("application/json"), (method, path, r.status_code, r.text)
        assert r.headers["allow"] == "GET, HEAD", (method, path)
        body = r.json()
        assert (body["type"], body["status"], body["title"]) == (ERR + "OperationNotSupported", 405, "Method not allowed"), body
        assert method in body["detail"] and "GET" in body["detail"], body
    assert (await api.get(f"/ngsi-ld/v1/entities/{eid}")).status_code == 200  # the served routes still answer


async def test_id_idpattern_attrs_keyvalues_and_retrieve(api: httpx.AsyncClient) -> None:
    eid = "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T05:00:00Z"
    r = await get(api, "/ngsi-ld/v1/entities", id=eid, attrs="LAeq,LA90")
    (ent,) = r.json()
    assert set(ent) == {"id", "type", "LAeq", "LA90"} and ent["LAeq"]["value"] == published_round(seed.level(0, 5), 1)
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, idPattern=r".*:lyon-bellecour:P1D:.*", options="keyValues")
    days = {e["id"].rsplit("P1D:", 1)[1]: e for e in r.json()}
    assert set(days) == {"2024-06-09T22:00:00Z", "2024-06-10T22:00:00Z"}
    assert days["2024-06-09T22:00:00Z"]["Lden"] == 67.0 and "Lden" not in days["2024-06-10T22:00:00Z"]
    assert isinstance(days["2024-06-09T22:00:00Z"]["LAeq"], float)
    one = await api.get(f"/ngsi-ld/v1/entities/{eid}")
    assert one.status_code == 200 and one.json()["id"] == eid
    missing = await api.get("/ngsi-ld/v1/entities/urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2020-01-01T00:00:00Z")
    assert missing.status_code == 404 and missing.json()["type"] == ERR + "ResourceNotFound"
    assert (await get(api, "/ngsi-ld/v1/entities", type="Streetlight")).json() == []
    assert (await get(api, "/ngsi-ld/v1/entities", limit=5)).status_code == 400  # too broad
    assert (await get(api, "/ngsi-ld/v1/entities", type=NOISE, limit=101)).json()["type"] == ERR + "TooManyResults"


async def test_temporal_between_one_series(api: httpx.AsyncClient) -> None:
    sid = "urn:ngsi-ld:NoiseLevelObserved:se-chavanelle:PT1M"
    r = await get(api, "/ngsi-ld/v1/temporal/entities", id=sid, timerel="between",
                  timeAt="2024-06-10T00:30:00Z", endTimeAt="2024-06-10T01:00:00Z")
    assert r.status_code == 200
    (ent,) = r.json()
    assert ent["id"] == sid and ent["location"]["type"] == "GeoProperty"
    times = [i["observedAt"] for i in ent["LAeq"]]
    assert len(times) == 30 and times[0] == "2024-06-10T00:30:00Z" and times[-1] == "2024-06-10T00:59:00Z"
    assert [i["value"] for i in ent["LAeq"]] == [published_round(seed.level(1, k), 1) for k in range(30, 60)]
    assert ent["LAeq"][0]["unitCode"] == "2N"
    r = await get(api, "/ngsi-ld/v1/temporal/entities", id=sid, timerel="before", timeAt="2024-06-10T00:03:00Z",
                  attrs="LAeq", options="temporalValues")
    (ent,) = r.json()
    assert set(ent) == {"id", "type", "LAeq"}
    assert ent["LAeq"]["values"] == [[published_round(seed.level(1, k), 1), f"2024-06-10T00:0{k}:00Z"] for k in range(3)]
    r = await get(api, "/ngsi-ld/v1/temporal/entities", id=sid, timerel="after", timeAt="2024-06-10T01:58:00Z", attrs="LAeq")
    assert [i["observedAt"] for i in r.json()[0]["LAeq"]] == ["2024-06-10T01:59:00Z"]


async def test_temporal_lastn_q_pagination_and_truncation(api: httpx.AsyncClient) -> None:
    r = await get(api, "/ngsi-ld/v1/temporal/entities", type=NOISE, q='aggregationPeriod=="PT1H"', lastN=3, attrs="LAeq",
                  count="true", limit=2)
    assert r.headers["NGSILD-Results-Count"] == "3" and 'rel="next"' in r.headers["link"]
    body = r.json()
    assert [e["id"] for e in body] == ["urn:ngsi-ld:NoiseLevelObserved:lyon-bellecour:PT1H", "urn:ngsi-ld:NoiseLevelObserved:se-chavanelle:PT1H"]
    assert [i["observedAt"] for i in body[0]["LAeq"]] == ["2024-06-10T21:00:00Z", "2024-06-10T22:00:00Z", "2024-06-10T23:00:00Z"]
    nxt = (await get(api, "/ngsi-ld/v1/temporal/entities", type=NOISE, q='aggregationPeriod=="PT1H"', lastN=3, attrs="LAeq", limit=2, offset=2)).json()
    assert [e["id"] for e in nxt] == ["urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H"]
    # q filters instances: only the loud minutes come back
    r = await get(api, "/ngsi-ld/v1/temporal/entities", id="urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1M", q="LAeq>=75", attrs="LAeq")
    values = [i["value"] for i in r.json()[0]["LAeq"]]
    assert values and all(v >= 75 for v in values)
    assert len(values) == sum(1 for k in range(120) if seed.level(0, k) >= 75)
    # 120 instances > max_instances=100: 206 with Content-Range, earliest first
    r = await get(api, "/ngsi-ld/v1/temporal/entities", id="urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1M", attrs="LAeq")
    assert r.status_code == 206 and r.headers["Content-Range"] == "date-time 2024-06-10T00:00:00Z-2024-06-10T01:39:00Z/100"
    assert len(r.json()[0]["LAeq"]) == 100
    for params in ({"timerel": "between", "timeAt": "2024-06-10T01:00:00Z"}, {"timerel": "before"}, {"lastN": 0},
                   {"timerel": "after", "timeAt": "yesterday"}):
        r = await get(api, "/ngsi-ld/v1/temporal/entities", type=NOISE, **params)
        assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", params


async def test_csource_registration_example(api: httpx.AsyncClient) -> None:
    reg = (await api.get("/ngsi-ld/csourceRegistration.json")).json()
    assert reg["type"] == "ContextSourceRegistration" and reg["endpoint"] == "http://sonopolis.test"
    assert reg["information"][0]["entities"] == [{"type": NOISE}] and "LAeq" in reg["information"][0]["propertyNames"]


async def test_retrieve_entity_honours_keyvalues(api: httpx.AsyncClient) -> None:
    """Retrieve Entity takes ``options`` like Query Entities (CIM 009 §6.5.3.1: keyValues / simplified)."""
    eid = "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T05:00:00Z"
    (queried,) = (await get(api, "/ngsi-ld/v1/entities", id=eid, options="keyValues")).json()
    for option in ("keyValues", "simplified"):
        r = await get(api, f"/ngsi-ld/v1/entities/{eid}", options=option)
        assert r.status_code == 200 and r.json() == queried, option
    assert queried["LAeq"] == published_round(seed.level(0, 5), 1)
    r = await get(api, f"/ngsi-ld/v1/entities/{eid}", options="keyValues", attrs="LAeq")
    assert r.json() == {"id": eid, "type": NOISE, "LAeq": queried["LAeq"]}


async def test_attrs_selects_entities_that_have_one_of_them(api: httpx.AsyncClient) -> None:
    """``attrs`` is matched, not only projected (CIM 009 §5.7.2.4 and the Query.attrs parameter): an entity
    without any of the attributes is not returned by a query, and Retrieve Entity answers 404 ResourceNotFound."""
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, attrs="Lden", count="true", limit=100)
    body = r.json()
    # Lden exists only on the daily buckets of the day seeded in lden_daily (one per sensor)
    assert r.headers["NGSILD-Results-Count"] == "3" and len(body) == 3
    assert all(set(e) == {"id", "type", "Lden"} and ":P1D:" in e["id"] for e in body)
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, attrs="Lden,LAeq_d", options="keyValues", limit=100)
    assert len(r.json()) == 3
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, attrs="LAeq,Lden", count="true", limit=1)
    assert r.headers["NGSILD-Results-Count"] == str(3 * (120 + 24 + 2))
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, attrs="thirdOctaveBands", count="true", limit=1)
    assert r.headers["NGSILD-Results-Count"] == str(3 * (120 + 24 + 2))
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, attrs="nosuchAttribute", count="true")
    assert r.json() == [] and r.headers["NGSILD-Results-Count"] == "0"
    # attrs alone is a selector: every entity having one of them
    r = await get(api, "/ngsi-ld/v1/entities", attrs="https://sonopolis.eu/ns/noise/v1#Lden", count="true", limit=100)
    assert r.headers["NGSILD-Results-Count"] == "3"
    hourly = "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T05:00:00Z"
    missing = await get(api, f"/ngsi-ld/v1/entities/{hourly}", attrs="Lden")
    assert missing.status_code == 404 and missing.json()["type"] == ERR + "ResourceNotFound"
    assert set((await get(api, f"/ngsi-ld/v1/entities/{hourly}", attrs="Lden,LAeq")).json()) == {"id", "type", "LAeq"}
    # the temporal view matches series the same way
    r = await get(api, "/ngsi-ld/v1/temporal/entities", type=NOISE, attrs="Lden", timerel="after", timeAt="2024-06-01T00:00:00Z",
                  count="true", limit=100)
    assert r.headers["NGSILD-Results-Count"] == "3"
    assert all(e["id"].endswith(":P1D") and set(e) == {"id", "type", "Lden"} for e in r.json())


async def test_limit_zero_only_with_count(api: httpx.AsyncClient) -> None:
    """CIM 009 §6.3.10: ``limit=0`` is only allowed with ``count=true`` (the count without the entities)."""
    for path in ("/ngsi-ld/v1/entities", "/ngsi-ld/v1/temporal/entities"):
        r = await get(api, path, type=NOISE, limit=0)
        assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", path
        r = await get(api, path, type=NOISE, limit=0, count="true", offset=1)
        assert r.status_code == 200 and r.json() == [] and int(r.headers["NGSILD-Results-Count"]) > 0, path
        # no page of 0 entities to go to: a next/prev link to the same offset would loop a client forever
        assert 'rel="next"' not in r.headers.get("link", "") and 'rel="prev"' not in r.headers.get("link", ""), path


async def test_idpattern_postgresql_cannot_compile_is_bad_request(api: httpx.AsyncClient) -> None:
    """A pattern Python's ``re`` accepts but PostgreSQL's regex engine does not is the client's error, not a 500."""
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, idPattern=r"(?P<sensor>se-jacquard):PT1H:.*")
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", r.text
    assert "idPattern" in r.json()["title"]


async def test_problem_details_always_carry_status_and_detail(api: httpx.AsyncClient) -> None:
    """CIM 009 §5.5.2 / the ProblemDetails schema: ``status`` and ``detail`` are mandatory, even where the title says it all."""
    cases = [
        ("/ngsi-ld/v1/entities", {"type": NOISE, "limit": "many"}),
        ("/ngsi-ld/v1/entities", {"type": NOISE, "offset": "-1"}),
        ("/ngsi-ld/v1/entities", {"type": NOISE, "timerel": "before"}),
        ("/ngsi-ld/v1/entities", {"type": NOISE, "georel": "within"}),
        ("/ngsi-ld/v1/temporal/entities", {"type": NOISE, "lastN": "0"}),
        ("/ngsi-ld/v1/temporal/entities", {"type": NOISE, "timeAt": "2024-06-10T00:00:00Z"}),
    ]
    for path, params in cases:
        r = await api.get(path, params=params)
        problem = r.json()
        assert r.status_code == problem["status"] == 400, (params, problem)
        assert problem["type"] == ERR + "BadRequestData" and isinstance(problem.get("detail"), str) and problem["detail"], (params, problem)


async def test_type_selection_language(api: httpx.AsyncClient) -> None:
    """``type`` is an Entity Type Selection (CIM 009 §4.17): ``,`` and ``|`` or, ``;`` and, parentheses."""
    daily = 'aggregationPeriod=="P1D"'
    for path in ("/ngsi-ld/v1/entities", "/ngsi-ld/v1/temporal/entities"):
        for selection in (NOISE, f"Device|{NOISE}", f"Device,{NOISE}", f"(Device|{NOISE})", f"({NOISE};{NOISE})|Device"):
            r = await get(api, path, type=selection, q=daily, count="true")
            assert r.status_code == 200 and int(r.headers["NGSILD-Results-Count"]) > 0, (path, selection, r.text)
        for selection in ("Device|Streetlight", f"{NOISE};Device", f"(Device|{NOISE});Streetlight"):
            r = await get(api, path, type=selection, q=daily, count="true")
            assert r.status_code == 200 and r.headers["NGSILD-Results-Count"] == "0", (path, selection)
        for selection in (f"({NOISE}", f"{NOISE}|", f"|{NOISE}", f"{NOISE};;Device", "()"):
            r = await get(api, path, type=selection)
            assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", (path, selection)


async def test_entity_ids_must_be_uris(api: httpx.AsyncClient) -> None:
    """An entity id that is not a URI is BadRequestData (CIM 009 §5.7.1.4, §5.7.2.4), not an unknown entity."""
    for eid in ("se-jacquard", "not a uri", "urn:ngsi-ld:NoiseLevelObserved:se jacquard:PT1H:2024-06-10T05:00:00Z"):
        r = await api.get(f"/ngsi-ld/v1/entities/{eid}")
        assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", eid
        for path in ("/ngsi-ld/v1/entities", "/ngsi-ld/v1/temporal/entities"):
            r = await get(api, path, id=f"urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H,{eid}")
            assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData", (path, eid)
    # a URI that is simply not ours stays an unknown entity
    r = await api.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Streetlight:1")
    assert r.status_code == 404 and r.json()["type"] == ERR + "ResourceNotFound"
    assert (await get(api, "/ngsi-ld/v1/entities", id="urn:ngsi-ld:Streetlight:1")).json() == []


async def test_georel_equals_a_polygon_never_matches_a_point(api: httpx.AsyncClient) -> None:
    """``equals`` is geometric equality (CIM 009 §4.10): a sensor's Point is never equal to a Polygon around it."""
    lyon = "[[[4.80,45.74],[4.86,45.74],[4.86,45.78],[4.80,45.78],[4.80,45.74]]]"
    for geometry, coordinates in (("Polygon", lyon), ("MultiPolygon", f"[{lyon}]")):
        r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, georel="equals", geometry=geometry, coordinates=coordinates,
                      q='aggregationPeriod=="P1D"', limit=100)
        assert r.status_code == 200 and r.json() == [], geometry
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, georel="equals", geometry="Point", coordinates="[4.832,45.7578]",
                  q='aggregationPeriod=="P1D"', limit=100)
    assert {e["refDevice"]["object"] for e in r.json()} == {"urn:ngsi-ld:Device:lyon-bellecour"}


async def test_concise_representation(api: httpx.AsyncClient) -> None:
    """``options=concise`` (CIM 009 §4.5.1, the Query.options representation): attribute ``type`` members dropped,
    a Property with nothing else as its bare value, a GeoProperty as its GeoJSON, a Relationship as ``{"object"}``."""
    eid = "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T05:00:00Z"
    normalized = (await api.get(f"/ngsi-ld/v1/entities/{eid}")).json()
    for r in (await get(api, f"/ngsi-ld/v1/entities/{eid}", options="concise"),
              await get(api, "/ngsi-ld/v1/entities", id=eid, options="concise")):
        body = r.json()
        ent = body[0] if isinstance(body, list) else body
        assert ent["id"] == eid and ent["type"] == NOISE
        assert ent["LAeq"] == {"value": normalized["LAeq"]["value"], "observedAt": "2024-06-10T05:00:00Z", "unitCode": "2N"}
        assert ent["refDevice"] == {"object": "urn:ngsi-ld:Device:se-jacquard"}
        assert ent["location"] == normalized["location"]["value"] and ent["location"]["type"] == "Point"
        assert ent["sonometerClass"] == "1" and ent["aggregationPeriod"] == "PT1H"
        assert ent["dateObserved"] == normalized["dateObserved"]["value"]
        # a JSON object value keeps its "value" member: bare, its keys would read as sub-attributes
        assert ent["dateObservedFrom"] == {"value": {"@type": "DateTime", "@value": "2024-06-10T05:00:00Z"}}
        assert set(ent) == set(normalized)
    r = await get(api, f"/ngsi-ld/v1/entities/{eid}", options="concise", attrs="LAeq")
    assert set(r.json()) == {"id", "type", "LAeq"}


async def test_pick_and_omit_project_entity_members(api: httpx.AsyncClient) -> None:
    """``pick``/``omit`` (CIM 009 V1.8 projection; Orion-LD asks context sources for ``pick=id`` to map entities):
    only the members listed / all but those, id and type included; both together is BadRequestData."""
    eid = "urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T05:00:00Z"
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, q='aggregationPeriod=="P1D"', pick="id", limit=100)
    assert r.status_code == 200 and len(r.json()) == 6 and all(set(e) == {"id"} for e in r.json())
    full = (await api.get(f"/ngsi-ld/v1/entities/{eid}")).json()
    picked = (await get(api, f"/ngsi-ld/v1/entities/{eid}", pick="id,type,LAeq,refDevice")).json()
    assert picked == {k: full[k] for k in ("id", "type", "LAeq", "refDevice")}
    kv = (await get(api, f"/ngsi-ld/v1/entities/{eid}", pick="LAeq", options="keyValues")).json()
    assert kv == {"LAeq": full["LAeq"]["value"]}
    omitted = (await get(api, "/ngsi-ld/v1/entities", id=eid, omit="thirdOctaveBands,location")).json()[0]
    assert omitted == {k: v for k, v in full.items() if k not in ("thirdOctaveBands", "location")}
    r = await get(api, "/ngsi-ld/v1/entities", id=eid, pick="id", omit="type")
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData"


async def test_lastn_counts_instances_of_the_requested_attribute(api: httpx.AsyncClient) -> None:
    """``lastN``: the last n instances *per Attribute* (CIM 009 Query.lastN). The newest day has no Lden yet
    (``lden_daily`` not computed): ``lastN=1&attrs=Lden`` is the day before's, not an entity without it."""
    sid = "urn:ngsi-ld:NoiseLevelObserved:lyon-bellecour:P1D"
    r = await get(api, "/ngsi-ld/v1/temporal/entities", id=sid, lastN=1, attrs="Lden")
    (ent,) = r.json()
    assert [(i["value"], i["observedAt"]) for i in ent["Lden"]] == [(67.0, "2024-06-09T22:00:00Z")]
    r = await get(api, "/ngsi-ld/v1/temporal/entities", id=sid, lastN=1, attrs="LAeq")
    assert [i["observedAt"] for i in r.json()[0]["LAeq"]] == ["2024-06-10T22:00:00Z"]


async def test_idpattern_matches_anywhere_in_both_views(api: httpx.AsyncClient) -> None:
    """idPattern is a regular expression the id must match, unanchored as brokers apply it (Orion-LD's $regex, and
    this source's own entity view, PostgreSQL ``~``); the temporal view required it to match the whole id."""
    r = await get(api, "/ngsi-ld/v1/entities", idPattern="se-jacquard:PT1H", count="true", limit=1)
    assert r.headers["NGSILD-Results-Count"] == "24"
    r = await get(api, "/ngsi-ld/v1/temporal/entities", idPattern="se-jacquard:PT1H", count="true", attrs="LAeq")
    assert r.headers["NGSILD-Results-Count"] == "1" and [e["id"] for e in r.json()] == ["urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H"]
    r = await get(api, "/ngsi-ld/v1/temporal/entities", idPattern="^urn:ngsi-ld:NoiseLevelObserved:se-", count="true", limit=0)
    assert r.headers["NGSILD-Results-Count"] == str(2 * 3)  # two sensors at Saint-Étienne x 1 min, 1 h, 1 day


async def test_default_page_fits_a_small_max_page(db: RoleDsns) -> None:
    """No ``limit``: the default page (20) is capped by ``max_page``, not a 403 TooManyResults for asking nothing."""
    seed.migrate(db.smart)
    with psycopg.connect(db.smart) as conn:
        seed.add_sensors(conn)
        seed.add_aggregates(conn, "levels_1h", T0, timedelta(hours=1), 24)
    async with seed.context_source(db.smart, max_page=10) as small:
        r = await get(small, "/ngsi-ld/v1/entities", type=NOISE)
        assert r.status_code == 200 and len(r.json()) == 10 and 'rel="next"' in r.headers["link"]
        r = await get(small, "/ngsi-ld/v1/temporal/entities", type=NOISE, attrs="LAeq", lastN=5)
        assert r.status_code == 200 and len(r.json()) == 3
        r = await get(small, "/ngsi-ld/v1/entities", type=NOISE, limit=11)
        assert r.status_code == 403 and r.json()["type"] == ERR + "TooManyResults"


class _BrokenPool:
    """A pool whose database is gone: every connection attempt fails as psycopg's would."""

    def connection(self) -> object:
        raise psycopg.OperationalError("connection to server at 127.0.0.1 failed: Connection refused")


async def test_an_internal_failure_is_an_internalerror_problem(caplog: pytest.LogCaptureFixture) -> None:
    """A failure of our own (the database gone) is still a ProblemDetails, of type InternalError, and is logged."""
    from fastapi import FastAPI

    from ngsi.context_source import build_router
    from ngsi.settings import NgsiSettings

    app = FastAPI()
    app.include_router(build_router(_BrokenPool(), settings=NgsiSettings()))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://sonopolis.test") as client:
        for path, params in (("/ngsi-ld/v1/entities", {"type": NOISE}),
                             ("/ngsi-ld/v1/entities/urn:ngsi-ld:NoiseLevelObserved:se-jacquard:PT1H:2024-06-10T05:00:00Z", {}),
                             ("/ngsi-ld/v1/temporal/entities", {"type": NOISE})):
            r = await client.get(path, params=params)
            assert r.status_code == 500 and r.headers["content-type"].startswith("application/json"), (path, r.text)
            problem = r.json()
            assert problem["type"] == ERR + "InternalError" and problem["status"] == 500 and problem["detail"], path
            assert "127.0.0.1" not in problem["detail"]  # no internals to the client
    assert "Connection refused" in caplog.text


async def test_accept_quality_values_are_honoured(api: httpx.AsyncClient) -> None:
    """Content negotiation (CIM 009 §6.3.4, RFC 9110 §12.5.1): the preferred of the two JSON types by q-value, and q=0
    refuses a type; nothing acceptable left is 406."""
    cases = {
        "application/json;q=0.9, application/ld+json;q=0.5": "application/json",
        "application/ld+json;q=0, application/json": "application/json",
        "application/json;q=0.2, application/ld+json": "application/ld+json",
        "text/html, application/ld+json;q=0.1": "application/ld+json",
        "*/*;q=0.1, application/json;q=0": "application/ld+json",
        "application/ld+json": "application/ld+json",
        "*/*": "application/json",
    }
    for accept, media in cases.items():
        r = await api.get("/ngsi-ld/v1/entities", params={"type": NOISE, "limit": 1}, headers={"Accept": accept})
        assert r.status_code == 200 and r.headers["content-type"].startswith(media), (accept, r.headers["content-type"])
    for accept in ("application/json;q=0", "application/ld+json;q=0, application/json;q=0", "*/*;q=0"):
        r = await api.get("/ngsi-ld/v1/entities", params={"type": NOISE, "limit": 1}, headers={"Accept": accept})
        assert r.status_code == 406 and r.json()["type"] == ERR + "NotAcceptable", accept


async def test_q_on_an_attribute_no_entity_has_matches_nothing(api: httpx.AsyncClient) -> None:
    """CIM 009 §4.9: a query term on an attribute the entity lacks is false, not an error (a broker may forward a
    q written for other sources). One we publish but cannot compare on stays a 400."""
    loud = await get(api, "/ngsi-ld/v1/entities", type=NOISE, q="LAeq>70", count="true", limit=1)
    for q in ("nope>1", "temperature", "https://example.org/ns#temperature>20", 'nope=="x";LAeq>70'):
        r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, q=q, count="true")
        assert r.status_code == 200 and r.json() == [] and r.headers["NGSILD-Results-Count"] == "0", (q, r.text)
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, q="nope>1|LAeq>70", count="true", limit=1)
    assert r.headers["NGSILD-Results-Count"] == loud.headers["NGSILD-Results-Count"] != "0"
    r = await get(api, "/ngsi-ld/v1/temporal/entities", type=NOISE, q="nope>1", count="true")
    assert r.status_code == 200 and r.json() == []
    r = await get(api, "/ngsi-ld/v1/entities", type=NOISE, q="thirdOctaveBands>1")
    assert r.status_code == 400 and r.json()["type"] == ERR + "BadRequestData"
