"""docker-compose.yml, checked statically (Docker cannot run on these machines).

What a data-protection officer and an IT team would check by reading the file, done
by a test so it stays true as the file changes: which service joins which network
(the smart services share none with the bridge, the safe broker or the cameras; only
the edge agents sit on both broker networks), that every secret is a file mounted
from ``deploy/secrets`` and that the Sonopolis settings actually read it under the
name compose mounts it, health checks, restart policies, pinned images, published
ports, and that the broker and database access files agree with the networks.
"""

from __future__ import annotations

import importlib
import ipaddress
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml

from common import config as common_config
from sonopolis.cli import COMMANDS
from sonopolis.embedded import ServiceError
from sonopolis.reader import READER_ROLE
from tests.system.deployed import DEPLOY, REPO_ROOT, caddy_binary, make_secrets

COMPOSE = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
EDGES = sorted(s for s in SERVICES if s.startswith("edge-"))

# Every service must be placed on one side explicitly: a new one fails this test
# until someone decides (and writes down) where it belongs.
SMART_SIDE = {"broker-smart", "ingest", "ngsi-sync", "api", "orion", "mongo", "grafana", "proxy"}
SAFE_SIDE = {"broker-safe", "bridge"}
SHARED_DB = {"db", "db-init"}
SETTINGS_OF = {"ingest": "smart", "ngsi-sync": "smart", "api": "smart", "bridge": "safe", **{e: "edge" for e in EDGES}}
SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|_KEY$|^KEY|DSN|CREDENTIAL)", re.I)
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def networks_of(service: str) -> set[str]:
    nets = SERVICES[service].get("networks", [])
    return set(nets if isinstance(nets, list) else nets.keys())


def members(network: str) -> set[str]:
    return {s for s in SERVICES if network in networks_of(s)}


def interpolate(value: str) -> str:
    """Compose variable interpolation with the file's defaults, ``$$`` -> ``$``."""
    return INTERPOLATION.sub(lambda m: m.group(2) or "", value).replace("$$", "$")


def one_shots() -> set[str]:
    return {
        dep
        for svc in SERVICES.values()
        for dep, cond in (svc.get("depends_on") or {}).items()
        if isinstance(cond, dict) and cond.get("condition") == "service_completed_successfully"
    }


def secret_mounts(service: str) -> dict[str, str]:
    """target file name under /run/secrets -> compose secret name."""
    out = {}
    for entry in SERVICES[service].get("secrets", []):
        if isinstance(entry, str):
            out[entry] = entry
        else:
            out[entry.get("target", entry["source"])] = entry["source"]
    return out


def sonopolis_argv(service: str) -> list[str]:
    """The ``sonopolis`` argv a Sonopolis container runs (entrypoint is ``sonopolis``)."""
    cmd = SERVICES[service]["command"]
    if cmd[:2] == ["sh", "-c"]:
        script = " ".join(cmd[2:])
        return script.split("sonopolis ", 1)[1].split()
    return list(cmd)


# ---------------------------------------------------------------- services and sides


def test_every_expected_service_exists_and_is_placed_on_a_side() -> None:
    expected = {"db", "db-init", "broker-smart", "broker-safe", "ingest", "ngsi-sync", "api", "bridge", "orion", "mongo", "grafana"}
    assert expected <= set(SERVICES), f"missing: {sorted(expected - set(SERVICES))}"
    assert len(EDGES) >= 2, "at least two simulated edge agents"
    unplaced = set(SERVICES) - SMART_SIDE - SAFE_SIDE - SHARED_DB - set(EDGES)
    assert not unplaced, f"services on no side (decide and add them here): {sorted(unplaced)}"


def test_smart_services_share_no_network_with_the_safe_side() -> None:
    for smart in sorted(SMART_SIDE):
        for safe in sorted(SAFE_SIDE):
            shared = networks_of(smart) & networks_of(safe)
            assert not shared, f"{smart} and {safe} share {sorted(shared)}"


def test_cameras_and_control_room_are_reachable_from_the_bridge_only() -> None:
    assert members("camera_net") == {"bridge"}
    assert members("control_room") == {"bridge"}
    assert members("db_safe") == {"db", "bridge"}
    assert members("safe_mqtt") == {"broker-safe", "bridge", *EDGES}
    assert members("smart_mqtt") == {"broker-smart", "ingest", *EDGES}
    assert members("db_admin") == {"db", "db-init"}
    assert "bridge" not in members("public") and "broker-safe" not in members("public")


def test_only_edge_agents_sit_on_both_broker_networks() -> None:
    both = members("smart_mqtt") & members("safe_mqtt")
    assert both == set(EDGES)
    for edge in EDGES:
        assert networks_of(edge) == {"smart_mqtt", "safe_mqtt"}, f"{edge} must reach the two brokers and nothing else"


def test_only_the_database_server_joins_both_database_networks() -> None:
    assert members("db_smart") & members("db_safe") == {"db"}
    assert not (members("db_smart") & SAFE_SIDE) and not (members("db_safe") & SMART_SIDE)


def test_networks_are_declared_and_backend_ones_internal() -> None:
    declared = COMPOSE["networks"]
    used = set().union(*(networks_of(s) for s in SERVICES))
    assert used == set(declared), f"undeclared {sorted(used - set(declared))}, unused {sorted(set(declared) - used)}"
    for net in ("db_admin", "db_smart", "db_safe", "ngsi", "orion_db", "camera_net"):
        assert declared[net].get("internal") is True, f"{net} must be internal (no route out)"


def test_pg_hba_admits_each_role_from_its_own_network_only() -> None:
    subnets = {n: ipaddress.ip_network(COMPOSE["networks"][n]["ipam"]["config"][0]["subnet"]) for n in ("db_admin", "db_smart", "db_safe")}
    assert len(set(subnets.values())) == 3
    rules = [line.split() for line in (DEPLOY / "postgres" / "pg_hba.conf").read_text().splitlines() if line.strip() and not line.startswith("#")]
    host_rules = {r[2]: (r[3], r[4]) for r in rules if r[0] == "host" and r[4] != "reject"}
    assert host_rules == {
        "postgres": (str(subnets["db_admin"]), "scram-sha-256"),
        "sonopolis_smart": (str(subnets["db_smart"]), "scram-sha-256"),
        "sonopolis_smart_reader": (str(subnets["db_smart"]), "scram-sha-256"),
        "sonopolis_safe": (str(subnets["db_safe"]), "scram-sha-256"),
    }
    assert rules[-2:] == [["host", "all", "all", "0.0.0.0/0", "reject"], ["host", "all", "all", "::/0", "reject"]]
    assert not any(r[-1] == "trust" for r in rules), "no trust authentication in production"
    db_cmd = " ".join(SERVICES["db"]["command"])
    assert "hba_file=/etc/sonopolis/pg_hba.conf" in db_cmd
    assert "./deploy/postgres/pg_hba.conf:/etc/sonopolis/pg_hba.conf:ro" in SERVICES["db"]["volumes"]


# ---------------------------------------------------------------- operations


def test_long_running_services_have_healthchecks_and_restart_policies() -> None:
    once = one_shots()
    assert once == {"db-init"}
    for name, svc in SERVICES.items():
        restart = svc.get("restart", "no")
        if name in once:
            assert restart.startswith("on-failure"), f"{name}: a one-shot retries on failure only"
            continue
        assert restart in {"unless-stopped", "always"}, f"{name}: restart policy {restart!r}"
        hc = svc.get("healthcheck") or {}
        assert hc.get("test") and not hc.get("disable"), f"{name} has no health check"
        assert all(k in hc for k in ("interval", "timeout", "retries")), f"{name}: health check timing"


def test_dependencies_wait_for_health_or_completion() -> None:
    for name, svc in SERVICES.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES, f"{name} depends on unknown {dep}"
            assert cond["condition"] in {"service_healthy", "service_completed_successfully"}, f"{name} -> {dep}"
    for svc in ("ingest", "ngsi-sync", "api", "bridge", "grafana"):
        assert SERVICES[svc]["depends_on"]["db-init"]["condition"] == "service_completed_successfully"


def test_images_are_pinned_and_sonopolis_is_built_here() -> None:
    for name, svc in SERVICES.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: image {image!r} is not pinned"
        if name in SETTINGS_OF or name == "db-init":
            assert svc["build"]["dockerfile"] == "Dockerfile" and image.startswith("sonopolis:")
    db_image = SERVICES["db"]["image"]
    assert db_image.startswith("timescale/timescaledb:2.28.") and db_image.endswith("-pg15"), "2.28.x is the last line for PG 15"


def test_timescale_does_not_phone_home_and_has_workers() -> None:
    cmd = " ".join(SERVICES["db"]["command"])
    assert "timescaledb.telemetry_level=off" in cmd
    workers = int(re.search(r"max_worker_processes=(\d+)", cmd).group(1))  # type: ignore[union-attr]
    bg = int(re.search(r"timescaledb.max_background_workers=(\d+)", cmd).group(1))  # type: ignore[union-attr]
    assert workers > 8 and workers >= bg + 8, "background workers need room in max_worker_processes"
    gf = SERVICES["grafana"]["environment"]
    assert gf["GF_ANALYTICS_REPORTING_ENABLED"] == "false" and gf["GF_ANALYTICS_CHECK_FOR_UPDATES"] == "false"


def test_only_front_doors_publish_ports() -> None:
    published = {name: svc["ports"] for name, svc in SERVICES.items() if svc.get("ports")}
    assert set(published) == {"proxy", "broker-smart", "broker-safe", "bridge"}
    assert {p.split(":")[-1] for p in published["proxy"]} == {"443", "80"}
    assert published["broker-smart"][0].endswith(":8883:8883") and published["broker-safe"][0].endswith(":8884:8883")
    (console,) = published["bridge"]
    assert interpolate(console).startswith("127.0.0.1:"), "the control-room console is not public by default"


def test_data_lives_in_named_volumes() -> None:
    wants = {"db": "/var/lib/postgresql/data", "broker-smart": "/mosquitto/data", "broker-safe": "/mosquitto/data", "mongo": "/data/db", "grafana": "/var/lib/grafana"}
    for svc, path in wants.items():
        named = [v.split(":")[0] for v in SERVICES[svc]["volumes"] if v.split(":")[1] == path]
        assert named and named[0] in COMPOSE["volumes"], f"{svc}: {path} is not a named volume"
    for edge in EDGES:
        (queue,) = [v.split(":")[0] for v in SERVICES[edge]["volumes"]]
        assert queue in COMPOSE["volumes"] and edge.removeprefix("edge-") in queue, f"{edge} has its own queue volume"


def test_grafana_is_provisioned_from_dashboards() -> None:
    mounts = SERVICES["grafana"]["volumes"]
    assert "./dashboards/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    assert "./dashboards/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts


def _go_expand_env(value: str, env: dict[str, str]) -> str:
    """Go's os.ExpandEnv, which Grafana applies to provisioning values: $VAR and ${VAR}, no defaults."""

    def name(m: re.Match[str]) -> str:
        return env.get(m.group(1) if m.group(1) is not None else m.group(2), "")

    return re.sub(r"\$\{([^}]*)\}|\$([A-Za-z0-9_]+)", name, value)


def test_grafana_datasource_resolves_with_the_compose_environment() -> None:
    """Each ${...} in the datasource must be a variable compose sets (${VAR:-x} once made host, user and database empty)."""
    env = {k: str(v) for k, v in SERVICES["grafana"]["environment"].items()}
    raw = (REPO_ROOT / "dashboards" / "grafana" / "provisioning" / "datasources" / "sonopolis.yaml").read_text()
    values = "\n".join(line for line in raw.splitlines() if not line.lstrip().startswith("#"))
    for ref in re.findall(r"\$\{([^}]*)\}", values):
        assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", ref), f"${{{ref}}}: Grafana has no shell defaults"
        assert ref in env, f"${{{ref}}} is not set in the grafana service"
    ds = yaml.safe_load(raw)["datasources"][0]
    assert _go_expand_env(ds["url"], env) == "db:5432"
    assert _go_expand_env(ds["user"], env) == READER_ROLE
    assert _go_expand_env(ds["jsonData"]["database"], env) == "sonopolis"
    assert _go_expand_env(ds["jsonData"]["sslmode"], env) in {"disable", "require", "verify-full"}
    # The role the datasource logs in as may connect from the network Grafana is on (pg_hba).
    assert "db_smart" in networks_of("grafana")


def test_grafana_logs_in_as_the_read_only_role_db_init_makes() -> None:
    """Any viewer can send SQL through the datasource: Grafana gets the reader's password only."""
    ds_file = REPO_ROOT / "dashboards" / "grafana" / "provisioning" / "datasources" / "sonopolis.yaml"
    (ds,) = yaml.safe_load(ds_file.read_text(encoding="utf-8"))["datasources"]
    env = {k: str(v) for k, v in SERVICES["grafana"]["environment"].items()}
    assert _go_expand_env(ds["user"], env) == READER_ROLE, ds["user"]
    password_file = re.fullmatch(r"\$__file\{/run/secrets/([^}]+)\}", ds["secureJsonData"]["password"])
    assert password_file, "the datasource password comes from a mounted secret file"
    mounts = secret_mounts("grafana")
    assert mounts.get(password_file.group(1)) == "db-smart-reader-password"
    assert set(mounts.values()) == {"grafana-admin-password", "db-smart-reader-password"}, "no read-write or safe credential"
    # db-init sets the reader's password from the very file Grafana reads.
    argv = sonopolis_argv("db-init")
    option = argv[argv.index("--smart-reader-password-file") + 1]
    assert option == "/run/secrets/db-smart-reader-password" and secret_mounts("db-init")[option.rsplit("/", 1)[1]] == "db-smart-reader-password"


def test_grafana_dashboard_provider_reads_where_compose_mounts_the_dashboards() -> None:
    """The file provider's path must be the mount target (it once named a subfolder nothing mounted)."""
    targets = {v.split(":")[1]: v.split(":")[0] for v in SERVICES["grafana"]["volumes"] if v.startswith("./")}
    provisioning = REPO_ROOT / targets["/etc/grafana/provisioning"].removeprefix("./")
    for provider in yaml.safe_load((provisioning / "dashboards" / "sonopolis.yaml").read_text())["providers"]:
        path = provider["options"]["path"]
        assert path in targets, f"provider {provider['name']}: {path} is not a mounted folder ({sorted(targets)})"
        source = REPO_ROOT / targets[path].removeprefix("./")
        assert list(source.glob("*.json")), f"provider {provider['name']}: no dashboard in {source}"


# ---------------------------------------------------------------- secrets


def test_no_secret_literal_anywhere_in_the_compose_file() -> None:
    for name, svc in SERVICES.items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use a mapping for environment"
        for key, value in env.items():
            value = str(value)
            if SECRET_NAME.search(key):
                assert key.endswith("_FILE") and value.startswith("/run/secrets/"), f"{name}: {key} must point to a secret file"
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", value), f"{name}: credentials in URL {key}"
            if len(value) >= 16 and not re.search(r"[/.:{ ]", value):
                assert not (re.search(r"[A-Z]", value) and re.search(r"[a-z]", value) and re.search(r"\d", value)), f"{name}: {key} looks like a secret"
    text = (REPO_ROOT / "docker-compose.yml").read_text()
    assert not re.search(r"(?i)(password|token|secret)\s*[:=]\s*['\"]?[A-Za-z0-9+/]{12,}", text)


def test_every_secret_is_a_file_made_by_make_secrets(tmp_path: Path) -> None:
    declared = COMPOSE["secrets"]
    used = {src for s in SERVICES for src in secret_mounts(s).values()}
    assert used == set(declared), f"undeclared {sorted(used - set(declared))}, unused {sorted(set(declared) - used)}"
    sensors = [SERVICES[e]["environment"]["SONOPOLIS_EDGE_SENSOR_ID"] for e in EDGES]
    made = make_secrets(tmp_path / "secrets", sensors)
    for name, spec in declared.items():
        assert set(spec) == {"file"} and spec["file"].startswith("./deploy/secrets/"), f"{name}: only files from deploy/secrets"
        filename = spec["file"].removeprefix("./deploy/secrets/")
        if filename == "safe.toml":
            assert (DEPLOY / "config" / "safe.example.toml").is_file(), "safe.toml is copied from the example"
            continue
        assert (made / filename).is_file(), f"make-secrets.sh does not produce {filename}"
    assert "deploy/secrets" in (DEPLOY / ".gitignore").read_text().replace("secrets/", "deploy/secrets")


def test_edge_agents_use_their_own_account_on_each_broker() -> None:
    for edge in EDGES:
        env = SERVICES[edge]["environment"]
        sensor = env["SONOPOLIS_EDGE_SENSOR_ID"]
        assert edge == f"edge-{sensor}"
        assert env["SONOPOLIS_EDGE_SMART_MQTT__USERNAME"] == env["SONOPOLIS_EDGE_SAFE_MQTT__USERNAME"] == sensor, "the ACLs' %u is the sensor id"
        assert env["SONOPOLIS_EDGE_SMART_MQTT__CLIENT_ID"] != env["SONOPOLIS_EDGE_SAFE_MQTT__CLIENT_ID"]
        mounts = secret_mounts(edge)
        assert mounts["sonopolis_edge_smart_mqtt__password"] == f"mqtt-smart-{sensor}-password"
        assert mounts["sonopolis_edge_safe_mqtt__password"] == f"mqtt-safe-{sensor}-password"
    client_ids = [v for s in SERVICES.values() for k, v in (s.get("environment") or {}).items() if k.endswith("CLIENT_ID")]
    assert len(client_ids) == len(set(client_ids)), "a shared client id would make sessions kick each other out"


def test_compose_environment_does_not_shadow_the_safe_config_file() -> None:
    """Environment beats TOML: a key compose sets can never be changed in safe.toml (retention once was)."""
    import tomllib

    env = SERVICES["bridge"]["environment"]
    assert env["SONOPOLIS_SAFE_CONFIG_FILE"] == "/run/secrets/safe.toml"
    example = tomllib.loads((DEPLOY / "config" / "safe.example.toml").read_text(encoding="utf-8"))
    shadowed = sorted(k for k in example if f"SONOPOLIS_SAFE_{k.upper()}" in env)
    assert not shadowed, f"compose sets {shadowed} in the environment, so safe.toml cannot change them"


def test_edge_stand_ins_run_the_agent_on_synthetic_audio(tmp_path: Path) -> None:
    """The stand-ins' shell pipeline, run here (generator bounded, no broker): the agent measures what it reads."""
    import subprocess

    from sonopolis.embedded import free_port

    cmd = SERVICES[EDGES[0]]["command"]
    assert cmd[:2] == ["sh", "-c"] and SERVICES[EDGES[0]]["entrypoint"][:2] == ["/usr/bin/tini", "-g"]
    bindir = Path(sys.executable).parent
    script = " ".join(cmd[2:])
    assert "python -m simulators.live_street" in script and "exec sonopolis edge - " in script
    script = script.replace("python -m simulators.live_street", f"{sys.executable} -m simulators.live_street --seconds 3 --fast")
    script = script.replace("exec sonopolis ", f"exec {bindir / 'sonopolis'} ")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOPOLIS_")} | {
        "SONOPOLIS_EDGE_SENSOR_ID": "ste-01-01",
        "SONOPOLIS_EDGE_QUEUE_DIR": str(tmp_path / "queue"),
        "SONOPOLIS_EDGE_SMART_MQTT__PORT": str(free_port()),  # nothing listens: frames stay queued
        "SONOPOLIS_EDGE_SMART_MQTT__CLIENT_ID": "edge-test-smart",
        "SONOPOLIS_EDGE_DRAIN_TIMEOUT_S": "0",
    }
    proc = subprocess.run(["sh", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "edge: frames=3 " in proc.stdout, proc.stdout + proc.stderr[-2000:]


def _settings_class(side: str) -> type:
    if side == "smart":
        return importlib.import_module("smart.settings").SmartSettings
    if side == "safe":
        return importlib.import_module("safecity_bridge.settings").SafeSettings
    return importlib.import_module("detectors.settings").EdgeSettings


@pytest.mark.parametrize("service", sorted(SETTINGS_OF))
def test_settings_read_the_environment_and_secrets_compose_gives(service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load the real settings tree with exactly the service's environment and mounted secrets."""
    made = make_secrets(tmp_path / "all", [SERVICES[e]["environment"]["SONOPOLIS_EDGE_SENSOR_ID"] for e in EDGES])
    shutil.copy(DEPLOY / "config" / "safe.example.toml", made / "safe.toml")
    run_secrets = tmp_path / "run-secrets"
    run_secrets.mkdir()
    for target, source in secret_mounts(service).items():
        shutil.copy(made / COMPOSE["secrets"][source]["file"].removeprefix("./deploy/secrets/"), run_secrets / target)
    for key in [k for k in os.environ if k.startswith("SONOPOLIS_")]:
        monkeypatch.delenv(key)
    for key, value in SERVICES[service]["environment"].items():
        monkeypatch.setenv(key, interpolate(str(value)).replace("/run/secrets/", f"{run_secrets}/"))
    monkeypatch.setattr(common_config, "SECRETS_DIR", run_secrets)

    settings = common_config.load_settings(_settings_class(SETTINGS_OF[service]))

    def secret(target: str) -> str:
        return (run_secrets / target).read_text().strip()

    if SETTINGS_OF[service] == "smart":
        assert settings.db.require_dsn() == secret("sonopolis_smart_db__dsn")
        assert "sonopolis_smart:" in settings.db.require_dsn()
        if service == "ingest":
            mqtt = settings.ingest.mqtt
            assert (mqtt.host, mqtt.port, mqtt.username) == ("broker-smart", 8883, "svc.ingest")
            assert mqtt.password.get_secret_value() == secret("sonopolis_smart_ingest__mqtt__password")
            assert mqtt.tls_ca_file is not None and mqtt.tls_ca_file.is_file()
        if service == "api":
            assert settings.api.admin_token.get_secret_value() == secret("sonopolis_smart_api__admin_token")
            assert settings.api.host == "0.0.0.0"
            assert settings.api.trust_forwarded_for and [str(n) for n in settings.api.trusted_proxies] == ["172.30.20.10/32"]
        if service == "ngsi-sync":
            assert settings.ngsi.broker_url == "http://orion:1026"
    elif SETTINGS_OF[service] == "safe":
        assert settings.db.dsn.get_secret_value() == secret("sonopolis_safe_db__dsn")
        assert (settings.mqtt.host, settings.mqtt.username) == ("broker-safe", "svc.bridge")
        assert settings.mqtt.password.get_secret_value() == secret("sonopolis_safe_mqtt__password")
        assert settings.retention_days == 15
        assert not settings.declaration.complete, "as shipped, the safe path is disabled until declared"
    else:
        assert settings.sensor_id == SERVICES[service]["environment"]["SONOPOLIS_EDGE_SENSOR_ID"]
        smart_pw = settings.smart_mqtt.password.get_secret_value()
        safe_pw = settings.safe_mqtt.password.get_secret_value()
        assert smart_pw == secret("sonopolis_edge_smart_mqtt__password") and safe_pw == secret("sonopolis_edge_safe_mqtt__password")
        assert smart_pw != safe_pw
        assert (settings.smart_mqtt.host, settings.safe_mqtt.host) == ("broker-smart", "broker-safe")
    # A side never receives the other side's secrets.
    other = {"smart": ("sonopolis_safe_",), "safe": ("sonopolis_smart_", "sonopolis_edge_"), "edge": ("sonopolis_smart_", "sonopolis_safe_")}
    assert not [t for t in secret_mounts(service) if t.startswith(other[SETTINGS_OF[service]])]


@pytest.mark.parametrize("service", sorted([*SETTINGS_OF, "db-init"]))
def test_commands_are_registered_and_their_options_exist(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = sonopolis_argv(service)
    assert argv[0] in COMMANDS, f"{service}: 'sonopolis {argv[0]}' is not a registered command"
    module_name, func_name = COMMANDS[argv[0]].split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
    except (ModuleNotFoundError, AttributeError) as exc:
        pytest.skip(f"{COMMANDS[argv[0]]} is not built yet ({exc}); its options cannot be checked")
    command = typer.main.get_command(_single(func))
    known = {opt for p in command.params for opt in getattr(p, "opts", [])}
    used = {a for a in argv[1:] if a.startswith("--")}
    assert used <= known, f"{service}: unknown options {sorted(used - known)} for 'sonopolis {argv[0]}'"
    # The whole argv parses: required arguments are there (the edge agents once ran a bare
    # `sonopolis edge`, which exits 2 on its missing SOURCE, restarted for ever).
    cmd = SERVICES[service]["command"]
    if cmd[:2] == ["sh", "-c"]:  # variables the script sets for the command (db-init: SONOPOLIS_ADMIN_DSN)
        for name in re.findall(r"(?:^|\s)([A-Z_][A-Z0-9_]*)=", " ".join(cmd[2:]).split("sonopolis ", 1)[0]):
            monkeypatch.setenv(name, "set-by-the-script")
    try:
        command.make_context(f"sonopolis {argv[0]}", argv[1:])
    except click.ClickException as exc:
        pytest.fail(f"{service}: 'sonopolis {' '.join(argv)}' does not parse: {exc.format_message()}")
    if SERVICES[service]["command"][:2] == ["sh", "-c"]:
        # A shell command must not be handed to the image's `sonopolis` entrypoint as arguments.
        entrypoint = SERVICES[service].get("entrypoint")
        assert entrypoint is not None and "sonopolis" not in entrypoint, f"{service}: sh -c needs its own entrypoint"


def _single(func: Any) -> typer.Typer:
    app = typer.Typer(add_completion=False)
    app.command()(func)
    return app


# ---------------------------------------------------------------- brokers


ACL_LINE = re.compile(r"^(user \S+|topic (read|write|readwrite|deny) \S+|pattern (read|write|readwrite|deny) \S+)$")


def parse_acl(side: str) -> dict[str | None, list[tuple[str, str]]]:
    """user (None = patterns) -> [(access, topic)]; fails on any line Mosquitto would not take."""
    rules: dict[str | None, list[tuple[str, str]]] = {None: []}
    user: str | None = None
    for n, raw in enumerate((DEPLOY / "mosquitto" / side / "acl").read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        assert ACL_LINE.match(line), f"{side}/acl:{n}: not an ACL line: {line!r}"
        words = line.split()
        topic = words[-1]
        assert "#" not in topic[:-1] and all(level in ("+", "#") or not {"+", "#"} & set(level) for level in topic.split("/")), f"{side}/acl:{n}: bad topic {topic}"
        if words[0] == "user":
            user = words[1]
            rules[user] = []
        elif words[0] == "pattern":
            rules[None].append((words[1], topic))
        else:
            assert user is not None, f"{side}/acl:{n}: topic before any user line"
            rules[user].append((words[1], topic))
    return rules


def test_acl_files_parse_and_give_one_reader_per_side() -> None:
    smart, safe = parse_acl("smart"), parse_acl("safe")
    assert set(smart) == {None, "svc.ingest", "svc.health"}
    assert set(safe) == {None, "svc.bridge", "svc.health"}
    assert smart[None] == [("write", "sonopolis/v1/levels/%u")]
    assert safe[None] == [("write", "sonopolis-safe/v1/events/%u")]
    assert ("read", "sonopolis/v1/levels/+") in smart["svc.ingest"]
    assert ("read", "sonopolis-safe/v1/events/+") in safe["svc.bridge"]
    readers_of_safe = [u for u, r in safe.items() if any(a in ("read", "readwrite") and t.startswith("sonopolis-safe/") for a, t in r)]
    assert readers_of_safe == ["svc.bridge"]
    for rules in (smart, safe):
        for user, entries in rules.items():
            if user is not None:
                assert not any(a in ("write", "readwrite") for a, _ in entries), f"{user} may publish"
                assert any(a == "deny" and t.endswith("/" + user) for a, t in entries), f"{user}: the %u pattern is not denied"
    all_smart = " ".join(t for r in smart.values() for _, t in r)
    all_safe = " ".join(t for r in safe.values() for _, t in r)
    assert "sonopolis-safe" not in all_smart and "sonopolis/v1" not in all_safe


@pytest.mark.parametrize("side", ["smart", "safe"])
def test_broker_config_uses_tls_auth_acl_and_only_mounted_files(side: str) -> None:
    conf = {}
    for line in (DEPLOY / "mosquitto" / side / "mosquitto.conf").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            conf.setdefault(key, []).append(value.strip())
    assert conf["listener"] == ["8883"], "one listener, TLS"
    assert conf["allow_anonymous"] == ["false"]
    assert conf["acl_file"] == ["/mosquitto/config/acl"]
    svc = SERVICES[f"broker-{side}"]
    assert f"./deploy/mosquitto/{side}:/mosquitto/config:ro" in svc["volumes"]
    mounted = set(secret_mounts(f"broker-{side}"))
    for key in ("cafile", "certfile", "keyfile", "password_file"):
        (path,) = conf[key]
        assert path.startswith("/run/secrets/") and path.removeprefix("/run/secrets/") in mounted, f"{side}: {key} {path} not mounted"
    health = " ".join(svc["healthcheck"]["test"])
    assert f"/run/secrets/mqtt-{side}-health-password" in health and "svc.health" in health


# ---------------------------------------------------------------- image


def test_dockerfile_is_non_root_pinned_and_secret_free() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11\.\d+-slim", text)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in {"root", "0"}
    for line in re.findall(r"^(?:ENV|ARG) .*$", text, re.M):
        assert not SECRET_NAME.search(line.split("=")[0]), f"secret-like build/run variable: {line}"
    assert "deploy" not in re.findall(r"^COPY (\S+)", text, re.M)
    ignore = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "**" or "**" in ignore, ".dockerignore denies everything by default"
    assert not any(line.startswith("!deploy") for line in ignore), "deploy/ (and its secrets) never enters the build context"


# ---------------------------------------------------------------- public proxy and NGSI-LD


CADDYFILE = DEPLOY / "caddy" / "Caddyfile"

# Where each public request must land. NGSI-LD design (docs/ngsi.md): Orion-LD answers
# entity queries (what ngsi-sync pushed, plus NoiseLevelObserved forwarded to the api,
# registered as a context source); history (the temporal API) is the api's own, as is
# the Sonopolis @context; writes are refused at the proxy.
PUBLIC_ROUTES = [
    ("GET", "/ngsi-ld/v1/entities", "orion:1026"),
    ("GET", "/ngsi-ld/v1/entities/urn:ngsi-ld:Device:ste-01-01", "orion:1026"),
    ("GET", "/ngsi-ld/v1/temporal/entities", "api:8080"),
    ("GET", "/ngsi-ld/contexts/sonopolis.jsonld", "api:8080"),
    ("POST", "/ngsi-ld/v1/entityOperations/upsert", 405),
    ("POST", "/ngsi-ld/v1/csourceRegistrations", 405),
    ("GET", "/grafana/d/city", "grafana:3000"),
    ("GET", "/v1/sensors", "api:8080"),
]


def _caddy_blocks() -> tuple[dict[str, dict[str, list[str]]], list[tuple[str, str | int]]]:
    """Named matchers (name -> {path: [...], method: [...]}) and handle blocks (matcher token -> upstream or status)."""
    matchers: dict[str, dict[str, list[str]]] = {}
    handles: list[tuple[str, str | int]] = []
    lines = [line.strip() for line in CADDYFILE.read_text().splitlines()]
    for i, line in enumerate(lines):
        words = line.split()
        if len(words) == 2 and words[0].startswith("@") and words[1] == "{":
            body = matchers.setdefault(words[0], {})
            for inner in lines[i + 1 :]:
                if inner == "}":
                    break
                key, *values = inner.split()
                body[key] = values
        elif words[:1] == ["handle"] and words[-1] == "{":
            token = words[1] if len(words) == 3 else "*"
            for inner in lines[i + 1 :]:
                if inner.startswith("reverse_proxy "):
                    handles.append((token, inner.split()[1]))
                    break
                if inner.startswith("respond "):
                    handles.append((token, int(inner.split()[-1])))
                    break
    return matchers, handles


def test_caddy_sends_each_public_ngsi_route_to_its_service() -> None:
    """Static reading of the Caddyfile (each handle's matcher and upstream); the real adapter's order is tested below."""
    matchers, handles = _caddy_blocks()
    by_paths: dict[tuple[tuple[str, ...], tuple[str, ...]], str | int] = {}
    for token, target in handles:
        spec = matchers.get(token, {"path": [token]} if token != "*" else {"path": ["*"]})
        by_paths[(tuple(spec.get("path", [])), tuple(spec.get("method", [])))] = target
    assert by_paths[(("/ngsi-ld/v1/temporal/*",), ("GET", "HEAD"))] == "api:8080"
    assert by_paths[(("/ngsi-ld/contexts/*",), ())] == "api:8080"
    assert by_paths[(("/ngsi-ld/*",), ("GET", "HEAD"))] == "orion:1026"
    assert by_paths[(("/ngsi-ld/*",), ())] == 405
    assert by_paths[(("*",), ())] == "api:8080"
    # The upstreams are reachable from the proxy, on the network it shares with them.
    for target in {t for _, t in handles if isinstance(t, str)}:
        assert networks_of(target.split(":")[0]) & networks_of("proxy"), f"proxy cannot reach {target}"


def test_orion_forwards_to_registered_context_sources() -> None:
    """Without -forwarding Orion-LD stores the api's registration and never uses it (no 1-min, no old buckets)."""
    assert "-forwarding" in SERVICES["orion"]["command"]
    # The api registers at its internal address: Orion must reach it there, and fetch the @context ngsi-sync names.
    assert networks_of("orion") & networks_of("api")
    assert SERVICES["ngsi-sync"]["environment"]["SONOPOLIS_SMART_NGSI__CONTEXT_URL"].startswith("http://api:8080/")
    deployment = (REPO_ROOT / "docs" / "deployment.md").read_text()
    assert "http://api:8080/ngsi-ld/csourceRegistration.json" in deployment, "the registration step is documented"


def test_api_believes_forwarded_headers_from_the_proxy_alone() -> None:
    """The api writes https @context links and counts residents, not the proxy, only if it trusts the proxy's
    X-Forwarded-*; Orion and Grafana share its network and must not be able to forge them."""
    import json

    env = SERVICES["api"]["environment"]
    assert env["SONOPOLIS_SMART_API__TRUST_FORWARDED_FOR"] == "true"
    trusted = [ipaddress.ip_network(n) for n in json.loads(env["SONOPOLIS_SMART_API__TRUSTED_PROXIES"])]
    (pool,) = COMPOSE["networks"]["public"]["ipam"]["config"]
    subnet, handed_out = ipaddress.ip_network(pool["subnet"]), ipaddress.ip_network(pool["ip_range"])
    proxy = ipaddress.ip_address(SERVICES["proxy"]["networks"]["public"]["ipv4_address"])
    assert trusted == [ipaddress.ip_network(proxy)], "the proxy's address, and nothing more"
    assert proxy in subnet and handed_out.subnet_of(subnet)  # type: ignore[arg-type]
    assert proxy not in handed_out, "Docker could give the proxy's address to another container"
    assert networks_of("api") & networks_of("proxy") == {"public"}, "the api sees the proxy at its public address"
    pinned = [(SERVICES[s]["networks"]["public"] or {}).get("ipv4_address") for s in members("public") - {"proxy"}
              if isinstance(SERVICES[s]["networks"], dict)]
    assert str(proxy) not in pinned, "another service pinned to the proxy's address"


def _route_target(routes: list[dict[str, Any]], method: str, path: str) -> str | int | None:
    """First matching route of ``caddy adapt`` output, evaluated as Caddy does (path globs, methods; host: any)."""
    import fnmatch

    def matches(m: dict[str, Any]) -> bool:
        assert set(m) <= {"host", "path", "method"}, f"matcher this test does not evaluate: {m}"
        return (not m.get("path") or any(fnmatch.fnmatchcase(path, p) for p in m["path"])) and (
            not m.get("method") or method in m["method"]
        )

    for route in routes:
        if not any(matches(m) for m in route.get("match") or [{}]):
            continue
        for handler in route.get("handle", []):
            kind = handler.get("handler")
            if kind == "reverse_proxy":
                return handler["upstreams"][0]["dial"]
            if kind == "static_response":
                return int(handler.get("status_code", 200))
            if kind == "subroute":
                found = _route_target(handler["routes"], method, path)
                if found is not None:
                    return found
    return None


def _caddy() -> str:
    try:
        return caddy_binary()
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.mark.parametrize(("method", "path", "expected"), PUBLIC_ROUTES)
def test_caddy_adapter_routes_public_requests(method: str, path: str, expected: str | int) -> None:
    """The real Caddyfile adapter sorts handle blocks by its own rules: check where requests really go."""
    import json
    import subprocess

    proc = subprocess.run(
        [_caddy(), "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "SONOPOLIS_PUBLIC_HOST": "localhost"},
    )
    assert proc.returncode == 0, proc.stderr
    (server,) = json.loads(proc.stdout)["apps"]["http"]["servers"].values()
    assert _route_target(server["routes"], method, path) == expected


def _documented_compose_runs() -> list[tuple[str, list[str]]]:
    """(service, argv) of each `docker compose run ...` in docs/deployment.md."""
    import shlex

    text = (REPO_ROOT / "docs" / "deployment.md").read_text().replace("\\\n", " ")
    runs = []
    for match in re.finditer(r"docker compose run ([^\n`#]*)", text):
        words = shlex.split(match.group(1))
        while words and words[0].startswith("-"):
            option = words.pop(0)
            if option in {"-v", "--volume", "-e", "--env", "-u", "--user", "-w", "--workdir", "--name", "--entrypoint"}:
                words.pop(0)
        assert words, f"no service in {match.group(0)!r}"
        runs.append((words[0], words[1:]))
    return runs


def test_documented_compose_runs_are_valid_sonopolis_commands() -> None:
    """`docker compose run ... <service> <args>` in docs/deployment.md: a Sonopolis service, and args that parse."""
    runs = _documented_compose_runs()
    assert any(service == "ingest" and argv[:2] == ["sensors", "--load"] for service, argv in runs), "the sensor registration step"
    for service, argv in runs:
        assert service in SETTINGS_OF or service == "db-init", f"docker compose run {service}: not a Sonopolis service"
        if not argv:  # the service's own command
            continue
        assert argv[0] in COMMANDS, f"docker compose run {service} {argv[0]}: not a sonopolis command"
        module_name, func_name = COMMANDS[argv[0]].split(":")
        command = typer.main.get_command(_single(getattr(importlib.import_module(module_name), func_name)))
        command.make_context(f"sonopolis {argv[0]}", argv[1:])
        if argv[0] == "sensors":  # it connects as the smart role, with the service's DSN secret
            assert "sonopolis_smart_db__dsn" in secret_mounts(service)
