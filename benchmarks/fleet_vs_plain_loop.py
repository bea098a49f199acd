"""Is the fleet's training path worse than a plain loop? (issue #21, "Must hold").

A fleet run's device trains SDNet from the learngene unit (inherited layers, eq. 21's L2
term, evaluation on its validation samples in eval mode). This script trains a plain
SDNet from scratch, with the class's own epochs, batch, learning rate and depth, on the
very same train / validation samples of that device (``clients.device.device_data``),
and prints both held-out SERs beside ZF and MMSE on those samples. Run it on a one-round
fleet run whose class trains at the paper's recipe:

    .venv/bin/airfleet run scenarios/paper_recipe.toml --run-dir runs/paper_recipe
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/fleet_vs_plain_loop.py runs/paper_recipe [--device 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clients.device import device_data  # noqa: E402
from common.learngene.training import Redraw, evaluate_ser, finetune  # noqa: E402
from common.models.sdnet import SDNet  # noqa: E402
from common.phy.metrics import baseline_sers  # noqa: E402
from common.profiles import device_profile  # noqa: E402
from common.scenario import load_scenario  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, nargs="?", default=None, help="default: the newest runs/paper_recipe* with a rounds.parquet")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--chunk", type=int, default=10, help="held-out SER printed every this many epochs")
    a = ap.parse_args()
    if a.run_dir is None:
        found = sorted(Path("runs").glob("paper_recipe*/rounds.parquet"), key=lambda p: p.stat().st_mtime)
        if not found:
            print("fleet_vs_plain_loop: no run of scenarios/paper_recipe.toml under runs/: `airfleet run scenarios/paper_recipe.toml` first (about 20 min)")
            return
        a.run_dir = found[-1].parent
    torch.set_num_threads(1)
    sc = load_scenario(a.run_dir / "scenario.toml")
    if sc.rounds != 1:
        raise SystemExit(f"{a.run_dir}: a one-round run is needed (the plain loop is one training), got rounds = {sc.rounds}")
    prof = device_profile(sc, a.device)
    cfg = prof.cfg
    train, val = device_data(prof, cfg, str(sc.data["server"]["cache_dir"]))
    fleet = [r for r in pq.read_table(a.run_dir / "rounds.parquet").to_pylist() if r["device_id"] == a.device]
    base = baseline_sers(val)
    torch.manual_seed(0)
    model = SDNet(prof.n_rx, prof.n_tx, prof.n_conv)
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg["lr"]))
    gen = torch.Generator().manual_seed(0)
    # the class's own sample draws: the same channels, fresh symbols, pilots and noise each epoch
    redraw = Redraw.per(cfg["train_draws"], prof.n_pilots, torch.Generator().manual_seed(1))
    done, curve = 0, []
    while done < int(cfg["epochs"]):
        n = min(a.chunk, int(cfg["epochs"]) - done)
        finetune(model, train, epochs=n, batch_size=int(cfg["batch_size"]), lr=float(cfg["lr"]), generator=gen, optimizer=opt, redraw=redraw)
        done += n
        curve.append((done, evaluate_ser(model, val)))
        print(json.dumps({"epoch": done, "plain_ser": curve[-1][1], "plain_over_mmse": round(curve[-1][1] / base["ser_mmse"], 3)}), flush=True)
    row = fleet[0] if fleet else {}
    print(json.dumps({
        "task": prof.task.task_id, "class": prof.class_name, "epochs": int(cfg["epochs"]), "batch_size": int(cfg["batch_size"]), "train_draws": cfg["train_draws"],
        "train_samples": len(train), "val_samples": len(val), "ser_zf": base["ser_zf"], "ser_mmse": base["ser_mmse"],
        "fleet_ser": row.get("ser"), "fleet_over_mmse": row["ser"] / base["ser_mmse"] if row.get("ser") is not None else None,
        "fleet_row_ser_mmse": row.get("ser_mmse"), "plain_ser": curve[-1][1], "plain_over_mmse": curve[-1][1] / base["ser_mmse"],
    }, indent=1))


if __name__ == "__main__":
    main()
