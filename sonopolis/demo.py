"""``sonopolis demo``: a simulated neighbourhood through the real pipeline, end to end.

Everything runs as it would in a city, on this machine: a real PostgreSQL (embedded
when none is configured), two real Mosquitto brokers (smart and safe) with the
production ACLs and per-client passwords, and each Sonopolis service as its own
process (ingest, api, ngsi-sync, bridge, edge agents). Only what cannot run here is
simulated: the ONVIF cameras and the NGSI-LD context broker (protocol-faithful
simulators), and the street itself (40 sensors; a few of them run the real edge agent
on synthesised street audio with a gunshot and a breaking window, held in memory and
piped to the agent's stdin: no audio file is ever written).

At the end it prints what reached each side, checked from the outside: rows and
aggregates in the smart schema, NGSI-LD entities in the broker, open-API answers, the
incidents in the control-room console and the moves the cameras received, and that
no security class appears anywhere on the smart side.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import typer

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy" / "mosquitto"


@dataclass
class DemoReport:
    """What the demo observed, side by side (used by the summary and the system tests)."""

    smart: dict[str, int | float | str] = field(default_factory=dict)
    safe: dict[str, int | float | str] = field(default_factory=dict)
    separation: dict[str, int | str] = field(default_factory=dict)


DEMO_MARKER = ".sonopolis-demo"


class WorkdirRefused(RuntimeError):
    """The demo will not empty this directory (not its own, or another demo is running in it)."""


def claim_workdir(workdir: Path) -> object:
    """Empty ``workdir`` for this run and hold it; the returned lock lives as long as the run.

    It is emptied only if it is new, empty or a previous demo's (it holds ``DEMO_MARKER``):
    ``--workdir .`` once deleted the current directory. It is held with an exclusive
    lock: two demos in one directory deleted each other's database files, and one left
    its PostgreSQL running with no parent.
    """
    import fcntl

    earlier_demo = (workdir / DEMO_MARKER).is_file() or ((workdir / "pg").is_dir() and (workdir / "logs").is_dir())  # or a pre-marker one
    if workdir.exists() and any(workdir.iterdir()) and not earlier_demo:
        raise WorkdirRefused(f"{workdir} is not empty and not a previous demo's: choose another --workdir (it is emptied at start)")
    lock_path = workdir.with_name(workdir.name + ".lock")
    lock = open(lock_path, "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        lock.close()
        raise WorkdirRefused(f"another demo is running in {workdir} (lock {lock_path})") from exc
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / DEMO_MARKER).write_text("emptied and reused by each `sonopolis demo`\n")
    return lock


def demo(
    sensors: int = typer.Option(40, "--sensors", min=3, max=40, help="Simulated sensors in the neighbourhood"),
    edge_agents: int = typer.Option(4, "--edge-agents", min=0, max=12, help="Sensors running the real edge agent on synthesised audio"),
    history_minutes: int = typer.Option(60, "--history-minutes", min=1, max=24 * 60, help="Minutes of past level frames published by the other sensors"),
    scene_seconds: int = typer.Option(40, "--scene-seconds", min=30, max=600, help="Length of the live street scene heard by the edge agents"),
    workdir: Path = typer.Option(Path("demo-run"), "--workdir",
                                 help="Where the embedded services keep their data and logs; emptied at start, so it must be "
                                      "empty, new, or a previous demo's"),
    keep_running: bool = typer.Option(False, "--keep-running", help="Leave everything running to browse the API, dashboard and console"),
    report_json: Path | None = typer.Option(None, "--report-json", help="Also write the observations as JSON"),
    seed: int = typer.Option(0, "--seed", help="Seed of the simulated world"),
) -> None:
    """Run the whole system on a simulated neighbourhood and show what reached each side."""
    import logging

    from rich.console import Console

    from sonopolis.demo_run import DemoRun

    console = Console()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    workdir = workdir.resolve()
    try:
        _workdir_lock = claim_workdir(workdir)  # held until the demo ends
    except WorkdirRefused as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    # SIGTERM/SIGHUP (a closed terminal, `kill`) must stop the services too: they run in
    # their own sessions, so without this they would outlive the demo.
    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    with ExitStack() as stack:
        run = DemoRun(workdir, console, n_sensors=sensors, n_edge=edge_agents, seed=seed)
        stack.callback(run.shutdown)
        try:
            report = run.execute(history_minutes=history_minutes, scene_seconds=scene_seconds)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopping every service[/]")
            raise typer.Exit(130) from None
        except Exception as exc:  # the demo's top level: say what failed and where the logs are
            console.print(f"[bold red]demo failed:[/] {exc}\nlogs: {workdir / 'logs'}")
            raise typer.Exit(1) from exc
        run.print_summary(report)
        if report_json:
            report_json.write_text(json.dumps({"smart": report.smart, "safe": report.safe, "separation": report.separation}, indent=2))
        if keep_running:
            run.print_urls()
            console.print("Press Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(1)
                    run.supervisor.check()
            except KeyboardInterrupt:
                pass
    bad = [k for k, v in report.separation.items() if k.startswith("leaks") and v != 0]
    if bad:
        raise typer.Exit(2)
