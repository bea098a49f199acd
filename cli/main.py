"""``airfleet``: run, validate and report scenarios.

    airfleet validate FILE [FILE ...]      check scenario files; exit 2 on the first bad one
    airfleet run FILE [--ray-address ADDR] [--runs-dir DIR] [--run-dir DIR] [--quiet] [--debug]
    airfleet run --resume RUN_DIR          continue a stopped run: a fleet after its last completed round,
                                           a study with the units of work it completed
    airfleet report RUN_DIR                redraw every plot and the summary table
    airfleet bench [NAME ...]              run benchmarks/NAME.py (all if none) and print JSON
    airfleet devices FILE                  number of devices (supernodes) a fleet needs
    airfleet schema [--study KIND] [-o FILE]
                                           JSON Schema of a fleet (or study) scenario file

For completion and checking in an editor, save the schema and name it on a scenario's
first line (Taplo / Even Better TOML): ``#:schema ./airfleet.schema.json``.

A fleet scenario runs as a Flower simulation on Ray (one supernode per device); a study
scenario (``[study] kind = ...``) runs its paper experiment in-process. Exit codes: 0 ok,
1 the run failed (an internal error's traceback is in RUN_DIR/error.log), 2 bad input
(nothing created), 130 interrupted (Ctrl-C or SIGTERM; resumable with ``--resume``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from common.scenario import Scenario, ScenarioError, parse_scenario, read_scenario_file

__all__ = ["main", "run_fleet", "run_study", "load_any_scenario"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def run_fleet(
    scenario: Scenario,
    run_dir: Path,
    ray_address: str | None = None,
    quiet: bool = False,
    resume: bool = False,
) -> Path:
    """Run a fleet scenario as a Flower simulation (Ray backend); return the run dir.

    Parameters
    ----------
    scenario : Scenario
        A validated fleet scenario (its ``path`` must be a readable file).
    run_dir : Path
        Where results go (created).
    ray_address : str, optional
        Address of an existing Ray cluster (``ray start --head`` prints it); default: a
        local Ray instance started for this run.
    quiet : bool
        No progress output.
    resume : bool
        Continue the run in ``run_dir`` after its last completed round (its checkpoint and
        its devices' kept state); the tables end as an uninterrupted run's would.
    """
    from flwr.app import Context, RecordDict
    from flwr.simulation.run_simulation import _run_simulation

    from clients.app import app as client_app
    from server.app import app as server_app
    from server.results import init_run_dir

    from clients.persistence import RESUME_ROUND_ENV, STATE_DIR_ENV
    from server.results import load_checkpoint

    from cli.ray_watchdog import OWNER_ENV, ray_watchdog

    if resume:
        ck = load_checkpoint(run_dir)
        done = ck[0]["round"] if ck else 0
    else:
        init_run_dir(run_dir, scenario)
        done = 0
    env = {
        # each device keeps its state on its own "flash" under the run directory (resume)
        STATE_DIR_ENV: str((run_dir / "device_state").resolve()),
        RESUME_ROUND_ENV: str(done),
        # Ray starts its workers at nice 15 by default: on a machine with other work running
        # the simulated devices starve (issue #22); they run at the scenario's niceness
        # unless RAY_worker_niceness is set in the environment
        "RAY_worker_niceness": os.environ.get("RAY_worker_niceness", str(int(scenario.data["server"]["worker_niceness"]))),
    }
    saved_env = {k: os.environ.get(k) for k in (*env, "AIRFLEET_QUIET", OWNER_ENV)}
    os.environ.update(env)  # read by Ray when it starts the workers, which inherit them
    gpus = float(scenario.data["server"]["gpus_per_device"])
    if gpus == 0:
        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # no GPUs are asked for; silence Ray's notice
    if quiet:
        import logging

        os.environ["AIRFLEET_QUIET"] = "1"  # restored below with the other variables
        logging.getLogger("flwr").setLevel(logging.CRITICAL)  # device crashes are in the rows
    cpus = float(scenario.data["server"]["cpus_per_device"])
    backend_config: dict = {"client_resources": {"num_cpus": cpus, "num_gpus": gpus}, "init_args": {}}
    if ray_address:
        backend_config["init_args"]["address"] = ray_address
    if quiet:
        backend_config["init_args"]["log_to_driver"] = False
    context = Context(
        run_id=0,
        node_id=0,
        node_config={},
        state=RecordDict(),
        run_config={"scenario": str(Path(scenario.path).resolve()), "run-dir": str(run_dir), "resume": "1" if resume else ""},
    )
    # The public run_simulation() takes no run config; this is the same call it makes,
    # with the ServerApp's context carrying the scenario path and run directory.
    from server.app import STOP

    STOP.clear()
    try:
        # the local Ray instance's processes end with this driver even after kill -9 (its
        # agents outlived it by 61 s); a cluster the run only joins is not the run's to end
        with _stop_on_signals(STOP, quiet), (contextlib.nullcontext({}) if ray_address else ray_watchdog()) as owner_env:
            os.environ.update(owner_env)  # before Ray starts: everything it spawns inherits it
            _run_simulation(
                num_supernodes=scenario.num_devices,
                exit_event=_exit_event(),
                client_app=client_app,
                server_app=server_app,
                backend_name="ray",
                backend_config=backend_config,
                server_app_context=context,
            )
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    if not (run_dir / "summary.json").is_file():
        raise RuntimeError(f"the simulation ended without results; see the log above (run dir {run_dir})")
    return run_dir


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, quiet: bool) -> Iterator[None]:
    """SIGINT / SIGTERM set ``stop``: the server stops at its next poll, the simulation
    engine shuts Ray down, and the run directory stays resumable. A second signal raises
    ``KeyboardInterrupt`` at once. Only in the main thread (a signal handler can be set
    nowhere else); elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen = {"n": 0}

    def handler(signum: int, frame: object) -> None:
        seen["n"] += 1
        stop.set()
        if seen["n"] > 1:
            raise KeyboardInterrupt
        if not quiet:
            print(f"\n{signal.Signals(signum).name}: stopping at the next poll (again to force)", file=sys.stderr, flush=True)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` in the main thread, as Ctrl-C does: a study killed
    by ``kill PID`` (a scheduler, a shell's job control) unwinds like an interrupted one, so
    its sitting is recorded, its worker processes are stopped, and ``--resume`` continues it.
    Elsewhere than the main thread the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _exit_event():  # noqa: ANN202 - flwr telemetry enum
    from flwr.supercore.telemetry import EventType

    return EventType.PYTHON_API_RUN_SIMULATION_LEAVE


#: a study run's wall time per sitting (s): ``summary.json``'s ``wall_s`` is their sum
SITTINGS_FILE = "sittings.json"


def _flat_scenario(data: dict) -> dict:
    """A resolved study scenario as ``{"seed": 1, "study.epochs": 50, ...}``."""
    return {**{k: v for k, v in data.items() if k != "study"}, **{f"study.{k}": v for k, v in data.get("study", {}).items()}}


def resume_changes(held: dict, now: dict, may_change: dict[str, str], run_dir: Path) -> str:
    """What a study run resumed in ``run_dir`` changed in its resolved scenario (``held``: the
    one its completed units of work were computed under; ``now``: the one it resumes with),
    as ``"study.epochs 50 -> 200"``; empty when nothing did.

    ``may_change`` (the study module's ``RESUME_MAY_CHANGE``) names the ``[study]`` keys that
    may differ: ``"grow"`` (a number that may only increase: the units go on from their
    checkpoints) or ``"any"`` (a key that does not touch the numbers).

    Raises
    ------
    RunError
        Any other difference, or a ``"grow"`` key that shrank: one line naming each key.
    """
    from server.results import RunError

    a, b = _flat_scenario(held), _flat_scenario(now)
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    rule = {f"study.{k}": v for k, v in may_change.items()}
    bad = [k for k in diff if rule.get(k) is None
           or (rule[k] == "grow" and not (isinstance(a.get(k), (int, float)) and isinstance(b.get(k), (int, float)) and b[k] >= a[k]))]
    if bad:
        what = ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in bad)
        may = ", ".join(f"{k} ({'may only grow' if v == 'grow' else 'any value'})" for k, v in may_change.items()) or "nothing"
        raise RunError(f"{run_dir} holds completed units of work of another scenario ({what}; a resumed run of this study may change {may}): "
                       f"give a new --run-dir, or continue it unchanged with --resume {run_dir}")
    return ", ".join(f"{k} {a.get(k)!r} -> {b.get(k)!r}" for k in diff)


def run_study(scenario: Scenario, run_dir: Path, quiet: bool = False) -> dict:
    """Run a study scenario in-process; write its tables, summary and plots. ``wall_s`` in
    the summary is the wall time of every sitting of the run (``--resume`` adds one)."""
    from common.progress import ConsoleProgress
    from server.results import RunError, init_run_dir, write_json
    from studies import load_study

    study = dict(scenario.data["study"])
    module = load_study(study.pop("kind"))
    held = run_dir / "scenario.resolved.json"
    if (run_dir / "work").is_dir() and held.is_file():
        # a study loads every completed unit it finds: never those of another scenario
        grown = resume_changes(json.loads(held.read_text()), json.loads(scenario.to_json()), getattr(module, "RESUME_MAY_CHANGE", {}), run_dir)
        if grown and not quiet:
            print(f"{run_dir}: resumed with {grown}", file=sys.stderr)
    init_run_dir(run_dir, scenario)
    sittings_file = run_dir / SITTINGS_FILE
    try:
        sittings = [float(x) for x in json.loads(sittings_file.read_text())]
    except (OSError, ValueError, TypeError):
        sittings = []
    t0 = time.perf_counter()
    try:
        with _sigterm_interrupts():
            summary = module.run(study, scenario.seed, run_dir, ConsoleProgress(quiet))
    finally:  # a stopped sitting counts too (one killed by SIGKILL cannot)
        sittings.append(time.perf_counter() - t0)
        write_json(sittings_file, sittings)
    summary = {"study": scenario.data["study"]["kind"], "wall_s": sum(sittings), "sittings": len(sittings), **(summary or {})}
    write_json(run_dir / "summary.json", summary)
    module.report(run_dir)
    return summary


def load_any_scenario(path: str | Path) -> Scenario:
    """Read and validate a fleet or a study scenario file (``ScenarioError`` naming file and key)."""
    raw = read_scenario_file(path)
    if "study" in raw:
        from studies import parse_study

        return parse_study(raw, str(Path(path)))
    return parse_scenario(raw, str(Path(path)))


def _load(path: str) -> Scenario | None:
    """The validated scenario, or None after printing the error (exit code 2 follows)."""
    try:
        return load_any_scenario(path)
    except ScenarioError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def _cmd_validate(args: argparse.Namespace) -> int:
    for f in args.files:
        s = _load(f)
        if s is None:
            return EXIT_BAD_INPUT
        what = f"study {s.data['study']['kind']}" if s.is_study else f"{s.num_devices} devices in {len(s.classes)} classes, {s.rounds} rounds"
        print(f"{f}: ok ({what})")
    return EXIT_OK


def _cmd_devices(args: argparse.Namespace) -> int:
    s = _load(args.file)
    if s is None:
        return EXIT_BAD_INPUT
    print(s.num_devices)
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    from server.results import RunError, RunInterrupted, new_run_dir, write_error_log

    if args.resume:
        if args.scenario is not None or args.run_dir is not None:
            print("error: --resume RUN_DIR takes the run's own scenario.toml: give no scenario file and no --run-dir", file=sys.stderr)
            return EXIT_BAD_INPUT
        run_dir = Path(args.resume)
        if not (run_dir / "scenario.toml").is_file():
            print(f"error: --resume {run_dir}: not a run directory of a scenario file (no scenario.toml)", file=sys.stderr)
            return EXIT_BAD_INPUT
        scenario = _load(str(run_dir / "scenario.toml"))
        if scenario is None:
            return EXIT_BAD_INPUT
    else:
        if args.scenario is None:
            print("error: give a scenario file, or --resume RUN_DIR", file=sys.stderr)
            return EXIT_BAD_INPUT
        scenario = _load(args.scenario)
        if scenario is None:
            return EXIT_BAD_INPUT
        try:
            run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(args.runs_dir, scenario.name)
        except OSError as e:
            print(f"error: cannot create a run directory under {args.run_dir or args.runs_dir}: {e.strerror or e}", file=sys.stderr)
            return EXIT_FAILED
    try:
        if scenario.is_study:
            summary = run_study(scenario, run_dir, quiet=args.quiet)
            if not args.quiet:
                print(json.dumps(summary, indent=2, default=str))
                print(f"\nresults: {run_dir}")
        else:
            run_fleet(scenario, run_dir, ray_address=args.ray_address, quiet=args.quiet, resume=bool(args.resume))
    except (KeyboardInterrupt, RunInterrupted):
        if args.debug:
            raise
        print(f"\ninterrupted; completed rounds are kept in {run_dir}; continue with: airfleet run --resume {run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RunError as e:
        if args.debug:
            raise
        print(f"error: {e}\n(run directory kept: {run_dir})", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - report, keep what was written
        if args.debug:
            raise
        log = write_error_log(run_dir, e)
        where = f"traceback and versions in {log}" if log else "the run directory could not take error.log; rerun with --debug for the traceback"
        print(f"error: run failed: {type(e).__name__}: {e}\n(partial results kept in {run_dir}; {where})", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from server.report import class_summary, format_class_table, report_run

    try:
        resolved = Path(args.run_dir) / "scenario.resolved.json"
        study = json.loads(resolved.read_text()).get("study") if resolved.is_file() else None
        if study is not None:
            from studies import load_study

            paths = list(load_study(study["kind"]).report(Path(args.run_dir)))
        else:
            paths = report_run(args.run_dir)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for p in paths:
        print(p)
    rounds = Path(args.run_dir) / "rounds.parquet"
    if rounds.is_file():
        print("\n" + format_class_table(class_summary(pq.read_table(rounds))))
        from server.codec_report import codec_tables_text

        codecs = codec_tables_text(args.run_dir)
        if codecs:
            print("\n" + codecs)
    return EXIT_OK


def _cmd_schema(args: argparse.Namespace) -> int:
    from common.scenario import fleet_json_schema, study_json_schema

    if args.study is None:
        doc = fleet_json_schema()
    else:
        from studies import STUDIES, load_study

        if args.study not in STUDIES:
            print(f"error: --study: unknown study kind {args.study!r}; expected one of {sorted(STUDIES)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        doc = study_json_schema(args.study, load_study(args.study).SCHEMA)
    return _write_or_print(json.dumps(doc, indent=2) + "\n", args.output)


def _cmd_reproduction(args: argparse.Namespace) -> int:
    from studies.reproduction import STUDY_SCENARIOS, RunOutput, find_runs, keep_evidence, render

    runs = find_runs(Path(args.runs_dir))
    named: list[RunOutput] = []
    for d in args.run_dirs:
        try:
            run = RunOutput.load(Path(d))
        except (OSError, ValueError) as e:
            print(f"error: {d}: not a study run directory ({e})", file=sys.stderr)
            return EXIT_BAD_INPUT
        if run.kind not in STUDY_SCENARIOS:
            print(f"error: {d}: not a study run directory (its summary names no study of {sorted(STUDY_SCENARIOS)})", file=sys.stderr)
            return EXIT_BAD_INPUT
        runs[run.kind] = [r for r in runs.get(run.kind, []) if (r.scale, r.seed) != (run.scale, run.seed)] + [run]
        named.append(run)
    if args.evidence:
        root = Path(args.evidence)
        # the runs named on the command line, or else every run found: a run found under
        # --runs-dir is never kept over the evidence when other runs were named
        keep = named or [run for kind_runs in runs.values() for run in kind_runs]
        try:
            for run in keep:
                keep_evidence(run, root)
        except OSError as e:
            print(f"error: {root}: cannot keep evidence: {e.strerror or e}", file=sys.stderr)
            return EXIT_BAD_INPUT
        runs = find_runs(root)
    return _write_or_print(render(runs), args.output)


def _write_or_print(text: str, output: str | None) -> int:
    """``text`` to stdout, or to ``output`` (then its path is printed; exit 2 if unwritable)."""
    if output is None:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as e:
        print(f"error: {output}: cannot write: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(output)
    return EXIT_OK


def _cmd_bench(args: argparse.Namespace) -> int:
    root = Path(__file__).resolve().parents[1] / "benchmarks"
    names = args.names or sorted(p.stem for p in root.glob("*.py") if not p.stem.startswith("_"))  # _*: helpers
    for n in names:
        path = root / f"{n}.py"
        if not path.is_file():
            print(f"error: no benchmark {n!r} in {root}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"== {n}", flush=True)
        rc = subprocess.call([sys.executable, str(path)])
        if rc:
            return EXIT_FAILED
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="airfleet", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate", help="check scenario files")
    v.add_argument("files", nargs="+")
    v.set_defaults(fn=_cmd_validate)
    d = sub.add_parser("devices", help="print the number of devices a fleet scenario needs (supernodes)")
    d.add_argument("file")
    d.set_defaults(fn=_cmd_devices)
    r = sub.add_parser("run", help="run a scenario (fleet simulation or study)")
    r.add_argument("scenario", nargs="?", default=None)
    r.add_argument("--resume", metavar="RUN_DIR", default=None, help="continue a stopped run: a fleet after its last completed round, a study with the units of work (trained models, collective tasks) it completed")
    r.add_argument("--debug", action="store_true", help="re-raise internal errors (full traceback) instead of one line")
    r.add_argument("--ray-address", default=None, help="existing Ray cluster to run the simulation on")
    r.add_argument("--runs-dir", default=os.environ.get("AIRFLEET_RUNS_DIR", "runs"), help="parent of new run directories")
    r.add_argument("--run-dir", default=None, help="exact run directory (default: RUNS_DIR/<name>-<timestamp>)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.set_defaults(fn=_cmd_run)
    rep = sub.add_parser("report", help="redraw plots and the summary of a run directory")
    rep.add_argument("run_dir")
    rep.set_defaults(fn=_cmd_report)
    sc = sub.add_parser("schema", help="print the JSON Schema of a scenario file (for editors)")
    sc.add_argument("--study", metavar="KIND", default=None, help="a study scenario of this kind (default: a fleet scenario)")
    sc.add_argument("-o", "--output", metavar="FILE", default=None, help="write the schema here instead of stdout")
    sc.set_defaults(fn=_cmd_schema)
    rp = sub.add_parser("reproduction", help="the papers' headline claims against study runs (docs/reproduction.md)")
    rp.add_argument("run_dirs", nargs="*", help="study run directories (default: the newest of each kind under --runs-dir)")
    rp.add_argument("--runs-dir", default=os.environ.get("AIRFLEET_RUNS_DIR", "runs"), help="where to look for study runs")
    rp.add_argument("--evidence", metavar="DIR", default=None, help="first keep the named runs' summaries and tables (none named: every run found under --runs-dir) in DIR/<kind>/<run>/ (docs/evidence), then render from all kept there")
    rp.add_argument("-o", "--output", metavar="FILE", default=None, help="write the page here instead of stdout")
    rp.set_defaults(fn=_cmd_reproduction)
    b = sub.add_parser("bench", help="run benchmark scripts (print JSON)")
    b.add_argument("names", nargs="*")
    b.set_defaults(fn=_cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    return int(args.fn(args))


if __name__ == "__main__":
    sys.exit(main())
