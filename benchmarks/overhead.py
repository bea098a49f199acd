"""Platform overhead: airfleet vs a bare Flower ServerApp/ClientApp, devices doing no work.

For N devices (default 10, 100, 1000), each system runs R rounds in a fresh process on
Flower's simulation engine (Ray backend, same resources):

- airfleet: a scenario whose one device class has ``workload = "none"``, through the real
  ServerApp / ClientApp (registration, availability sampling, byte accounting, per-round
  Parquet writes, the same reply records as a working device);
- bare Flower: a ServerApp that sends every node the same instruction ConfigRecord with
  ``Grid.send_and_receive`` each round, and a ClientApp that replies with the same
  MetricRecord and an empty payload ConfigRecord.

Reported per system and N: the median (and quartiles) of per-round wall times over rounds
2..R (round 1 warms the Ray actors up) pooled over ``--repeats`` interleaved bare/airfleet
pairs, each pair's own ratio, and the peak resident memory of the whole process tree (the
driver, Ray's raylet/GCS and its workers), sampled from /proc every 0.2 s. On 2 cores a
round's wall time moves by +-20% from run to run (both systems poll Flower's link state
every 0.1 s), hence the pairs.

    python benchmarks/overhead.py [--n 10 100 1000] [--rounds 10] [--repeats 3]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _proc_tree import measure

ROOT = Path(__file__).resolve().parents[1]
#: how often both systems pull replies; finer than Flower's 0.1 s default so that a round's
#: wall time measures the work, not which 0.1 s tick it ended on
POLL_S = 0.01


# ---------------------------------------------------------------- the two systems
def _run_airfleet(n: int, rounds: int) -> dict:
    import pyarrow.parquet as pq

    from common.scenario import load_scenario
    from cli.main import run_fleet

    tmp = Path(tempfile.mkdtemp(prefix="airfleet-overhead-"))
    scen = tmp / "overhead.toml"
    scen.write_text(
        f'name = "overhead"\nseed = 1\nrounds = {rounds}\n[channels]\nsource = "rayleigh"\n'
        f'[server]\nround_timeout_s = 3600.0\nregister_timeout_s = 3600.0\npoll_interval_s = {POLL_S}\n'
        f'[[fleet]]\nname = "idle"\ncount = {n}\nworkload = "none"\n'
    )
    run_dir = tmp / "run"
    run_fleet(load_scenario(scen), run_dir, quiet=True)
    t = pq.read_table(run_dir / "rounds.parquet").to_pylist()
    per_round = [max(r["round_wall_s"] for r in t if r["round"] == k) for k in range(1, rounds + 1)]
    return {"per_round_s": per_round}


def _run_bare(n: int, rounds: int) -> dict:
    from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.telemetry import EventType

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:  # same reply records as airfleet's "none" device
        cfg = msg.content.config_records["config"]
        t0 = time.perf_counter()
        metrics = MetricRecord(
            {"device-id": int(cfg["device-id"]), "task-id": 100, "flops": 0, "n-params": 0, "wall-s": time.perf_counter() - t0}
        )
        return Message(RecordDict({"metrics": metrics, "payloads": ConfigRecord({})}), reply_to=msg)

    server = ServerApp()
    per_round: list[float] = []

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        grid.pull_interval = POLL_S  # type: ignore[attr-defined]  # InMemoryGrid's, as airfleet's
        nodes = sorted(grid.get_node_ids())
        while len(nodes) < n:  # the simulation registers its nodes concurrently
            time.sleep(0.05)
            nodes = sorted(grid.get_node_ids())
        for rnd in range(1, rounds + 1):
            t0 = time.perf_counter()
            msgs = [
                Message(
                    RecordDict({"config": ConfigRecord({"round": rnd, "device-id": i, "unit-version": ""})}),
                    dst_node_id=nid,
                    message_type="train",
                    group_id=str(rnd),
                )
                for i, nid in enumerate(nodes)
            ]
            replies = list(grid.send_and_receive(msgs, timeout=3600.0))
            assert len(replies) == len(nodes)
            per_round.append(time.perf_counter() - t0)

    ctx = Context(run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config={})
    _run_simulation(
        num_supernodes=n,
        exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
        client_app=client,
        server_app=server,
        backend_name="ray",
        backend_config={"client_resources": {"num_cpus": 1.0, "num_gpus": 0.0}, "init_args": {"log_to_driver": False}},
        server_app_context=ctx,
    )
    return {"per_round_s": per_round}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved bare/airfleet pairs per N")
    ap.add_argument("--one", choices=["airfleet", "bare"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        import logging

        logging.getLogger("flwr").setLevel(logging.ERROR)
        fn = _run_airfleet if args.one == "airfleet" else _run_bare
        res = fn(args.n[0], args.rounds)
        print(json.dumps(res))
        return
    results = []
    for n in args.n:
        row: dict = {"n_devices": n, "rounds": args.rounds, "repeats": args.repeats}
        steady: dict[str, list[float]] = {"bare": [], "airfleet": []}
        peaks: dict[str, list[float]] = {"bare": [], "airfleet": []}
        pair_ratios = []
        for _ in range(args.repeats):  # interleaved pairs: slow drifts of the machine hit both
            med = {}
            for system in ("bare", "airfleet"):
                res, peak = measure([sys.executable, __file__, "--one", system, "--n", str(n), "--rounds", str(args.rounds)], ROOT)
                rounds = res["per_round_s"][1:] or res["per_round_s"]
                steady[system] += rounds
                peaks[system].append(peak / 2**20)
                med[system] = statistics.median(rounds)
            pair_ratios.append(round(med["airfleet"] / med["bare"], 3))
        for system in ("bare", "airfleet"):
            row[system] = {
                "per_round_s_median": statistics.median(steady[system]),
                "per_round_s_quartiles": [round(q, 4) for q in statistics.quantiles(steady[system], n=4)] if len(steady[system]) > 1 else None,
                "peak_rss_mib": round(max(peaks[system]), 1),
            }
        row["wall_ratio"] = row["airfleet"]["per_round_s_median"] / row["bare"]["per_round_s_median"]
        row["wall_ratio_per_pair"] = pair_ratios
        row["memory_ratio"] = row["airfleet"]["peak_rss_mib"] / row["bare"]["peak_rss_mib"]
        results.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "overhead", "target_ratio": 1.10, "results": results}, indent=2))


if __name__ == "__main__":
    main()
