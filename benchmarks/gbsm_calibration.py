"""Calibration of the built-in ``gbsm`` model against TR 38.901 UMi street canyon NLoS.

Prints one JSON object:

- ``lsp``: per large-scale parameter, the table's log-mean / log-std at 6 GHz (Table
  7.5-6 Part-1; ZSD of Table 7.5-8 at the tasks' mean BS distance), the generated ones
  (the centre drop of ``--lsp-tasks`` tasks) and the spreads realised by the rays
  (power-weighted rms delay spread; circular angular spread ``sqrt(-2 ln |sum P e^{j phi}|)``);
- ``clusters``: clusters and rays per drop, clusters removed at -25 dB (step 6);
- ``ser``: ZF / MMSE (eq. 9 / 11 with the LS estimate) and genie LMMSE SER, median
  condition number and UE correlation (``benchmarks/sdnet_fidelity.channel_stats``) of
  tasks 100-104 (the fidelity study's held-out tasks) at 32x8, 25 dB, 16 pilots, for
  ``model = "38.901"`` (the default: the panel of the serving sector of a three-sector
  site, and ``bs_facing = "fixed"``: one panel facing +x for every task) and
  ``"legacy"``, next to the learngene paper's Table I range;
- ``ser_spread``: quantiles of ZF / MMSE SER over tasks 0..``--ser-tasks``-1 and the
  share of tasks in Table I's ZF range, for both 38.901 variants;
- ``track``: ensemble channel correlation between positions ``d`` apart.

``--doc docs/channel_model.md`` also rewrites the block between
``<!-- calibration:begin -->`` and ``<!-- calibration:end -->`` of that file with these
figures as Markdown tables. Run (about a minute on one core):

    flock /tmp/airfleet-heavy.lock .venv/bin/python benchmarks/gbsm_calibration.py --doc docs/channel_model.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sdnet_fidelity import channel_stats  # noqa: E402
from common.channels import ChannelTask, sample_channels  # noqa: E402
from common.channels.gbsm import channels_along_track  # noqa: E402
from common.channels.gbsm_umi import UmiEnvironment  # noqa: E402
from common.channels.layout import ue_positions_m  # noqa: E402
from common.channels.tr38901_umi import LSP_NAMES, SPEC_VERSION, UMI_NLOS, lsp_log_mean_std  # noqa: E402
from common.phy.dataset import make_detection_batch  # noqa: E402
from common.phy.metrics import baseline_sers  # noqa: E402

PAPER_TABLE_I = {"ser_zf": (0.065, 0.126), "ser_mmse": (0.050, 0.117)}  # learngene paper, Table I
SER_TASKS = (100, 101, 102, 103, 104)


#: the variants whose SERs are reported: label -> task options
VARIANTS = {
    "38.901": {"model": "38.901"},
    "38.901, bs_facing=fixed": {"model": "38.901", "bs_facing": "fixed"},
    "legacy": {"model": "legacy"},
}


def _task(task_id: int, model: str, **opts: Any) -> ChannelTask:
    return ChannelTask.make("gbsm", 32, 8, task_id, 0, model=model, **opts)


def _circular_spread_deg(angles_deg: np.ndarray, p: np.ndarray) -> float:
    z = np.sum(p * np.exp(1j * np.radians(angles_deg))) / p.sum()
    return math.degrees(math.sqrt(-2.0 * math.log(abs(z))))


def lsp_table(n_tasks: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generated vs table LSP statistics over the centre drops of ``n_tasks`` tasks."""
    drawn: dict[str, list[float]] = {k: [] for k in LSP_NAMES}
    realised: dict[str, list[float]] = {k: [] for k in ("DS", "ASD", "ASA", "ZSA", "ZSD")}
    d2d, removed = [], []
    for tid in range(n_tasks):
        env = UmiEnvironment(_task(tid, "38.901"))
        x = env.drop_position_m(0, 0)
        d2d.append(float(np.hypot(x[0], x[1])))
        lsp = env.large_scale_parameters(0, 0)
        for k, v in zip(LSP_NAMES, (lsp.ds_s, lsp.asd_deg, lsp.asa_deg, lsp.zsa_deg, lsp.zsd_deg), strict=True):
            drawn[k].append(math.log10(v))
        cs = env.clusters(0, 0)
        p, tau = cs.ray_powers.ravel(), cs.ray_delays_s.ravel()
        mean_tau = float(np.sum(p * tau))
        realised["DS"].append(math.log10(math.sqrt(float(np.sum(p * (tau - mean_tau) ** 2)))))
        for k, ang in (("ASD", cs.aod_deg), ("ASA", cs.aoa_deg), ("ZSA", cs.zoa_deg), ("ZSD", cs.zod_deg)):
            realised[k].append(math.log10(_circular_spread_deg(ang.ravel(), p)))
        removed.append(int(np.sum(cs.cluster_powers == 0)))
    mu, sigma = lsp_log_mean_std(6e9, float(np.mean(d2d)), 1.5, 15.0)
    out = {}
    for i, k in enumerate(LSP_NAMES):
        out[k] = {
            "table_mu": round(float(mu[i]), 3),
            "table_sigma": round(float(sigma[i]), 3),
            "drawn_mu": round(float(np.mean(drawn[k])), 3),
            "drawn_sigma": round(float(np.std(drawn[k])), 3),
            "rays_mu": round(float(np.mean(realised[k])), 3),
            "rays_sigma": round(float(np.std(realised[k])), 3),
        }
    clusters = {
        "clusters_per_drop": UMI_NLOS.n_clusters,
        "rays_per_cluster": UMI_NLOS.rays_per_cluster,
        "removed_at_minus_25_db_mean": round(float(np.mean(removed)), 3),
        "removed_at_minus_25_db_max": int(np.max(removed)),
        "tasks": n_tasks,
    }
    return out, clusters


def ser_row(task: ChannelTask, n: int) -> dict[str, float]:
    """The fidelity setting: 32x8, 25 dB, 16 LS pilots, ``n`` held-out samples."""
    test = make_detection_batch(sample_channels(task, n, 1000), 25.0, 16, torch.Generator().manual_seed(2000))
    row = {**baseline_sers(test), **channel_stats(test.H)}
    return {k: round(float(v), 4) for k, v in row.items()}


def _bs_covariance(task: ChannelTask, centre_m: np.ndarray, seed: int) -> torch.Tensor:
    """BS-side covariance ``sum H H^H`` (``complex128 [n_rx, n_rx]``) of 40 UEs within 0.5 m of ``centre_m``."""
    rng = np.random.default_rng(seed)
    r, phi = 0.5 * np.sqrt(rng.random(40)), rng.uniform(0, 2 * np.pi, 40)
    pos = centre_m[None] + np.stack([r * np.cos(phi), r * np.sin(phi), np.zeros(40)], axis=-1)
    H = channels_along_track(task, pos).to(torch.complex128)
    return (H @ H.conj().transpose(-1, -2)).sum(0)


def track_correlation(n_tasks: int) -> dict[str, dict[str, float]]:
    """Along a track from each task's centre, for separations ``d``:

    - ``channel``: ``|sum H(x) H(x + d)^*| / sqrt(sum |H(x)|^2 sum |H(x + d)|^2)`` over 30 UEs
      (small-scale: falls within a wavelength);
    - ``covariance``: ``Re tr(R1 R2) / (||R1||_F ||R2||_F)`` of the BS covariances of small
      neighbourhoods of ``x`` and ``x + d`` (1 - the correlation matrix distance; large-scale:
      falls as clusters are born and die over the 15 m correlation distance).
    """
    lam = 299_792_458.0 / 6e9
    out: dict[str, dict[str, float]] = {"channel": {}, "covariance": {}}
    for label, d in (("0.1 lambda", 0.1 * lam), ("1 m", 1.0), ("5 m", 5.0), ("15 m", 15.0), ("30 m", 30.0)):
        r, c = [], []
        for tid in range(n_tasks):
            task = _task(tid, "38.901")
            p0 = ue_positions_m(task, 30, seed=tid)
            shift = np.array([d, 0.0, 0.0])
            a = channels_along_track(task, p0)
            b = channels_along_track(task, p0 + shift)
            r.append(((a * b.conj()).sum().abs() / torch.sqrt(a.abs().pow(2).sum() * b.abs().pow(2).sum())).item())
            x0 = UmiEnvironment(task).drop_position_m(0, 0)
            R1, R2 = _bs_covariance(task, x0, tid), _bs_covariance(task, x0 + shift, tid)
            c.append((torch.trace(R1 @ R2).real / (torch.linalg.norm(R1) * torch.linalg.norm(R2))).item())
        out["channel"][label] = round(float(np.mean(r)), 3)
        out["covariance"][label] = round(float(np.mean(c)), 3)
    return out


def markdown(res: dict[str, Any]) -> str:
    lines = [f"Generated by `benchmarks/gbsm_calibration.py` ({res['config']['spec']}, 6 GHz, {res['clusters']['tasks']} tasks' centre drops).", ""]
    lines += ["| lgX | 38.901 mu | 38.901 sigma | drawn mu | drawn sigma | rays mu | rays sigma |", "|---|---|---|---|---|---|---|"]
    for k, v in res["lsp"].items():
        unit = "s" if k == "DS" else "deg"
        lines.append(f"| {k} ({unit}) | {v['table_mu']} | {v['table_sigma']} | {v['drawn_mu']} | {v['drawn_sigma']} | {v['rays_mu']} | {v['rays_sigma']} |")
    c = res["clusters"]
    lines += ["", f"{c['clusters_per_drop']} clusters x {c['rays_per_cluster']} rays per drop; clusters removed at -25 dB (step 6): "
              f"{c['removed_at_minus_25_db_mean']} on average, at most {c['removed_at_minus_25_db_max']}.", ""]
    lines += ["| model | task | ZF SER | MMSE SER | genie LMMSE SER | median cond(H) | UE correlation |", "|---|---|---|---|---|---|---|"]
    for model, rows in res["ser"].items():
        for tid, r in rows.items():
            lines.append(f"| {model} | {tid} | {r['ser_zf']} | {r['ser_mmse']} | {r['ser_lmmse_genie']} | {r['cond_median']:.1f} | {r['ue_corr']} |")
    lo, hi = PAPER_TABLE_I["ser_zf"]
    mlo, mhi = PAPER_TABLE_I["ser_mmse"]
    lines += ["| paper, Table I | 5 targets | %s-%s | %s-%s | | | |" % (lo, hi, mlo, mhi), ""]
    for label, s in res["ser_spread"].items():
        lines += [f"- {label}, tasks 0-{s['tasks'] - 1}: ZF SER quantiles 10/25/50/75/90 % = {s['zf_quantiles']}, "
                  f"MMSE {s['mmse_quantiles']}; {s['share_in_table_i_zf_range']:.0%} of tasks have ZF SER in Table I's range "
                  f"({s['share_below']:.0%} below, {s['share_above']:.0%} above)."]
    lines += [""]
    t = res["track"]
    lines += ["| separation along a track | " + " | ".join(t["channel"]) + " |", "|---" * (len(t["channel"]) + 1) + "|",
              "| channel correlation | " + " | ".join(str(v) for v in t["channel"].values()) + " |",
              "| BS covariance similarity (1 - CMD) | " + " | ".join(str(v) for v in t["covariance"].values()) + " |"]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lsp-tasks", type=int, default=400)
    ap.add_argument("--ser-tasks", type=int, default=40)
    ap.add_argument("--ser-samples", type=int, default=1000)
    ap.add_argument("--doc", type=Path, help="rewrite the calibration block of this Markdown file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    lsp, clusters = lsp_table(args.lsp_tasks)
    ser = {label: {str(t): ser_row(ChannelTask.make("gbsm", 32, 8, t, 0, **o), args.ser_samples) for t in SER_TASKS} for label, o in VARIANTS.items()}
    q = (10, 25, 50, 75, 90)
    lo, hi = PAPER_TABLE_I["ser_zf"]
    spreads = {}
    for label in ("38.901", "38.901, bs_facing=fixed"):
        rows = [ser_row(ChannelTask.make("gbsm", 32, 8, t, 0, **VARIANTS[label]), args.ser_samples) for t in range(args.ser_tasks)]
        zf = np.array([r["ser_zf"] for r in rows])
        mm = np.array([r["ser_mmse"] for r in rows])
        spreads[label] = {
            "tasks": args.ser_tasks,
            "zf_quantiles": [round(float(v), 4) for v in np.percentile(zf, q)],
            "mmse_quantiles": [round(float(v), 4) for v in np.percentile(mm, q)],
            "share_in_table_i_zf_range": float(np.mean((zf >= lo) & (zf <= hi))),
            "share_below": float(np.mean(zf < lo)),
            "share_above": float(np.mean(zf > hi)),
        }
    res = {
        "config": {"spec": SPEC_VERSION, "carrier_hz": 6e9, "n_rx": 32, "n_tx": 8, "snr_db": 25.0, "pilots": 16, "ser_samples": args.ser_samples},
        "lsp": lsp,
        "clusters": clusters,
        "ser": ser,
        "paper_table_i": PAPER_TABLE_I,
        "ser_spread": spreads,
        "track": track_correlation(5),
    }
    print(json.dumps(res, indent=1))
    if args.doc is not None:
        text = args.doc.read_text()
        begin, end = "<!-- calibration:begin -->", "<!-- calibration:end -->"
        if begin not in text or end not in text:
            raise SystemExit(f"{args.doc}: no {begin} ... {end} block")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        args.doc.write_text(head + begin + "\n" + markdown(res) + "\n" + end + tail)


if __name__ == "__main__":
    main()
