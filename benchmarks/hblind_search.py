"""What the fitted H-blind baseline costs a device: ``covariance_ml_detect``'s pruned exact
search against full enumeration (``ml_detect`` on the whitened ZF estimate), on tasks of
``benchmarks/sdnet_map.py``'s map (default channel model, 32x8, 25 dB, 16 pilots).

Per task: the ZF-error covariance fitted from the paper's 8,100 training samples
(``zf_error_covariance``), then the seconds per 1,000 held-out samples of the pruned search
(all 1,000, median of ``--repeats``) and of full enumeration (the first ``--reference``
samples, scaled), whether the two decide alike on those samples, and the pruned search's
SER. Single thread (``torch.set_num_threads(1)``). This is what a device class with
``hblind_baseline = true`` adds to a round (``clients/device.py``).

    python benchmarks/hblind_search.py [--tasks 146 117 110 100] [--repeats 3] [--reference 100]

Prints one JSON line per task.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sdnet_map import held_out, map_task, training_set  # noqa: E402
from common.phy.detection import covariance_ml_detect, ml_detect, zf_error_covariance  # noqa: E402
from common.phy.metrics import ser  # noqa: E402
from common.phy.modulation import indices_to_symbols  # noqa: E402


def _seconds(f, repeats: int) -> tuple[float, torch.Tensor]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, nargs="+", default=[146, 117, 110, 100])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reference", type=int, default=100, help="samples searched by full enumeration")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for tid in args.tasks:
        task = map_task(tid)
        test, train = held_out(task), training_set(task, 8100, 0)
        C = zf_error_covariance(train.x_zf, indices_to_symbols(train.symbols))
        t_pruned, idx = _seconds(lambda: covariance_ml_detect(test.x_zf, C), args.repeats)
        U = torch.linalg.cholesky(torch.linalg.inv(C)).conj().T
        ref = test.x_zf[: args.reference].to(torch.complex128)
        A = U.expand(len(ref), -1, -1)
        t_full, full = _seconds(lambda: ml_detect((A @ ref.unsqueeze(-1)).squeeze(-1), A), 1)
        print(json.dumps({
            "task_id": tid,
            "n_t": int(test.x_zf.shape[-1]),
            "pruned_s_per_1000": round(t_pruned * 1000 / len(test), 4),
            "full_enumeration_s_per_1000": round(t_full * 1000 / len(ref), 3),
            "same_decisions": bool(torch.equal(idx[: len(ref)], full)),
            "ser_hblind_fit": ser(idx, test.symbols),
        }), flush=True)


if __name__ == "__main__":
    main()
