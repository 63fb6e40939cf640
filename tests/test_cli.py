"""The ``sonopolis`` command exposes every service, and the config is validated up front."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from sonopolis import cli


def test_every_registered_command_is_built() -> None:
    assert cli.MISSING == {}, f"commands whose module is missing: {cli.MISSING}"
    names = {c.name for c in cli.app.registered_commands}
    assert {"ingest", "edge", "ngsi-sync", "api", "bridge", "demo", "eval-detector", "calibrate"} <= names


def test_help_lists_services() -> None:
    result = CliRunner().invoke(cli.app, ["--help"])
    assert result.exit_code == 0
    for name in ("ingest", "edge", "ngsi-sync", "api", "bridge", "demo"):
        assert name in result.output


def test_bridge_process_does_not_load_smart_code_and_reverse() -> None:
    """Separate processes: building the CLI must not import either side's service modules."""
    code = (
        "import sys, sonopolis.cli as c;"
        "heavy=[m for m in sys.modules if m.split('.')[0] in ('safecity_bridge','ingestion','ngsi','api')"
        " and not m.endswith(('.cli','.settings')) and m not in ('safecity_bridge','ingestion','ngsi','api')];"
        "print(','.join(sorted(heavy)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"CLI import pulled in service modules: {out}"


def test_the_demo_empties_only_its_own_workdir_and_one_demo_at_a_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``--workdir .`` once deleted the current directory; two demos in one directory deleted each other's database."""
    import pytest

    from sonopolis.demo import DEMO_MARKER, WorkdirRefused, claim_workdir

    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("mine")
    with pytest.raises(WorkdirRefused, match="not empty and not a previous demo's"):
        claim_workdir(precious)
    assert (precious / "keep.txt").read_text() == "mine"
    run = tmp_path / "demo-run"
    lock = claim_workdir(run)
    (run / "pg").mkdir()
    with pytest.raises(WorkdirRefused, match="another demo is running"):
        claim_workdir(run)
    assert (run / "pg").is_dir()
    lock.close()  # type: ignore[attr-defined]
    again = claim_workdir(run)  # a previous demo's: emptied and reused
    assert sorted(p.name for p in run.iterdir()) == [DEMO_MARKER]
    again.close()  # type: ignore[attr-defined]


def test_db_init_never_prints_the_role_password(pg_admin_dsn: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The DSN is key=value text with the password in it; it once went to `docker logs db-init`."""
    import uuid

    import psycopg
    from psycopg import sql

    secret = f"S3cret-{uuid.uuid4().hex}"
    pw = tmp_path / "smart.pw"
    pw.write_text(secret + "\n")
    reader_secret = f"R3ader-{uuid.uuid4().hex}"
    reader_pw = tmp_path / "reader.pw"
    reader_pw.write_text(reader_secret + "\n")
    name = f"sonotest_dbinit_{uuid.uuid4().hex[:8]}"
    try:
        result = CliRunner().invoke(cli.app, ["db-init", "--admin-dsn", pg_admin_dsn, "--dbname", name, "--smart-password-file", str(pw),
                                              "--smart-reader-password-file", str(reader_pw)])
        assert result.exit_code == 0, result.output
        assert f"database '{name}' ready" in result.output and "sonopolis_smart_reader (read-only)" in result.output
        assert secret not in result.output and reader_secret not in result.output and "password" not in result.output
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_service_that_never_comes_up_is_still_stopped_by_the_supervisor(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """It was listed only once ready: a Ctrl-C or a timeout while it came up left it running after the demo."""
    import os

    import pytest

    from sonopolis.embedded import ServiceError, free_port
    from sonopolis.supervisor import ManagedProcess, Supervisor

    supervisor = Supervisor()
    never = ManagedProcess("never-listens", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ), tmp_path,
                           ready_port=free_port())
    with pytest.raises(ServiceError, match="did not listen"):
        supervisor.start(never, timeout=1)
    assert never.alive() and supervisor.processes == [never]
    supervisor.stop_all()
    assert not never.alive()


def test_commands_without_a_database_say_so_in_one_line(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`sonopolis api`, `export` and `sensors` ended in a ValueError traceback; ingest and ngsi-sync already exited 2."""
    monkeypatch.delenv("SONOPOLIS_SMART_DB__DSN", raising=False)
    monkeypatch.delenv("SONOPOLIS_SMART_CONFIG_FILE", raising=False)
    for args in (["api"], ["export", "--day", "2026-01-01"], ["sensors"]):
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        assert "DSN is not configured" in result.output and "Traceback" not in result.output, args


def test_a_stop_while_ingest_waits_for_its_database_is_a_clean_exit(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM (docker stop) before the database answered ended in an OperationalError traceback."""
    import os
    import signal
    import time

    from sonopolis.embedded import free_port

    env = {**os.environ, "SONOPOLIS_SMART_DB__DSN": f"postgresql://nobody@127.0.0.1:{free_port()}/none",
           "SONOPOLIS_SMART_INGEST__METRICS_PORT": "0", "HOME": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "sonopolis.cli", "ingest"], env=env, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # waiting for the database by now
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "stopped while waiting for the database" in err
