"""Study: online fine-tuning of a neural CSI compressor with entropy-coded decoder updates.

Paper: "Online Neural Model Fine-Tuning in Massive MIMO CSI Feedback: Taming the
Communication Cost of Model Updates" (Fig. 7-10, Table IV). Three experiments, all on the
built-in spatially consistent ``"gbsm"`` model, all with real bitstreams decoded by
:class:`common.csi.base_station.FeedbackServer`:

1. **schemes** (Fig. 7-8): the shared pre-trained compressors (trained on UEs inside the
   circle of their environment, one per RD weight in ``backbone_lmbdas``, each cached)
   meet shifted CSI: a UE moving along a track that starts ``shift_offset_m`` from the
   circle's centre (``shift_env = "same"``: among the same scatterers; ``"new"``: in another
   environment); the first ``n_finetune`` samples fine-tune, the next ``n_eval`` are coded
   and measured. No FT, EO and TM (translation modules around the frozen backbone,
   :mod:`common.csi.translation`) run on every backbone at its own RD weight, so each is a
   curve as in Fig. 7. FM, GA, FM with a uniform prior (FM-UP) and FM without the update
   regularizer (FM-noreg) fine-tune the low-rate backbone (the smallest backbone weight, as
   the paper: "we only fine-tune the low-bit-rate neural CSI compressor") at every
   fine-tuning weight in ``lmbdas``.
2. **quant_sweep** (Table IV): FM for every number of update bins in ``n_bins_sweep``, over
   the fixed range ``+-t * n_bins / 2`` (more bins, narrower ones).
3. **interval** (Fig. 10): FM every ``d`` metres along a ``track_m`` track for every ``d`` in
   ``intervals_m``: fine-tune on the last ``d`` metres (warm start from the decoder both ends
   share), code the next ``d`` metres with it; total rate = (latent + update bits) per CSI
   dimension. The sweet spot is the ``d`` with the least ``finetune_lmbda * MSE + rate``: the
   objective every interval was fine-tuned for (eq. 9, 21), on real bits and the base
   station's reconstruction.

Fine-tuning runs ``steps`` Adam steps at the quick scale and ``epochs`` passes over the
window at paper scale (the paper: 1,000 epochs). Pre-training and fine-tuning run on
``device`` (``auto``: CUDA when present; CPU results are deterministic).

Tables: ``rd.parquet`` (experiments 1-2, ``backbone_lmbda`` names the backbone of each
row), ``interval.parquet`` (3); PNGs from them alone. ``summary.json`` also compares FM
with EO and TM at FM's rate (``fm_vs_curves``: their NMSE interpolated in log-rate).

Every row of ``rd`` and of ``interval`` is a unit of work kept in ``out_dir/work``
(:mod:`studies.work_units`): run again into the same directory (``airfleet run --resume``),
the study computes only the rows it had not finished.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from common.channels import ChannelTask
from common.csi import FeedbackServer, device_environment, finetune, pretrained_compressor, resolve_cfg, track_csi, uplink
from common.csi.translation import evaluate_translation, train_translation
from common.models.csi_compressor import CSICompressor
from common.runtime import DEVICE_CHOICES, resolve_device
from common.schema import Field
from common.seeding import derive_seed
from studies import ProgressFn
from studies.work_units import WorkUnits

__all__ = ["SCHEMA", "SCHEMES", "BACKBONE_SCHEMES", "LOW_RATE_SCHEMES", "PAPER_SCALE", "run", "report", "study_cfg", "nmse_at_rate"]

#: label -> (scheme, overrides) of the schemes run on every backbone, at its own RD weight
BACKBONE_SCHEMES: dict[str, tuple[str, dict[str, Any]]] = {
    "No FT": ("none", {}),
    "EO": ("eo", {}),
    "TM": ("tm", {}),
}
#: label -> (scheme, overrides) of the schemes that fine-tune the low-rate backbone at every ``lmbdas``
LOW_RATE_SCHEMES: dict[str, tuple[str, dict[str, Any]]] = {
    "FM": ("fm", {}),
    "GA": ("ga", {}),
    "FM-UP": ("fm", {"prior": "uniform"}),
    "FM-noreg": ("fm", {"regularize_update": False}),
}
#: every label, in the order of the tables and the plot
SCHEMES: dict[str, tuple[str, dict[str, Any]]] = {**BACKBONE_SCHEMES, **LOW_RATE_SCHEMES}

#: what ``scale = "paper"`` changes (64 x 64 CSI, paper-size data and training)
PAPER_SCALE: dict[str, Any] = {
    "n_ant": 64, "n_sc": 64, "width": 64, "pretrain_samples": 12000, "pretrain_tasks": 8,
    "pretrain_steps": 75000, "n_finetune": 100, "n_eval": 400, "epochs": 1000, "lr": 1e-4,
    "interval_steps": 300, "track_m": 120.0, "intervals_m": [2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
}

SCHEMA: dict[str, Field] = {
    "scale": Field(str, "quick", choices=("quick", "paper"), doc="paper: 64x64 CSI and paper-size training (GPU)"),
    "n_ant": Field(int, 32, min=4, max=256),
    "n_sc": Field(int, 32, min=4, max=256),
    "width": Field(int, 32, min=1, max=512, doc="conv kernels (the paper: 64)"),
    "backbone_lmbdas": Field(list, [2.0, 32.0, 512.0], item=float, min=0.0, doc="RD weights of the pre-trained backbones, eq. (9), one cached backbone each: No FT, EO and TM get one RD point per backbone; FM, GA and the ablations fine-tune the smallest (the low-rate backbone). At the quick scale's 600 pre-training steps they land at ~0.32, 0.38 and 0.49 bits/dim on the training CSI"),
    "lmbdas": Field(list, [32.0, 128.0, 512.0], item=float, min=0.0, doc="fine-tuning RD weights of FM, GA and the ablations (one RD point each)"),
    "finetune_lmbda": Field(float, 32.0, min=0.0, doc="fine-tuning RD weight of the resolution sweep and the interval study"),
    "pretrain_samples": Field(int, 2000, min=8),
    "pretrain_tasks": Field(int, 1, min=1, max=64),
    "pretrain_steps": Field(int, 600, min=0),
    "radius_m": Field(float, 5.0, min=0.0),
    "spacing_m": Field(float, 1 / 29.6, min=1e-4, doc="CSI sample spacing along the track, m (the paper's 29.6 samples/m)"),
    "n_finetune": Field(int, 100, min=1),
    "n_eval": Field(int, 100, min=1, max=4096),
    "steps": Field(int, 300, min=0, doc="fine-tuning Adam steps of the scheme comparison and the resolution sweep (when epochs = 0)"),
    "epochs": Field(int, 0, min=0, doc="fine-tuning passes over the n_finetune window (paper scale: 1,000, the paper's); 0 counts steps instead"),
    "lr": Field(float, 1e-3, min=0.0, max=1.0, doc="Adam step: with bins much narrower than it no weight stays in the zero bin (Table IV at 1024 bins)"),
    "decoder_lr": Field(float, 1e-4, min=0.0, max=1.0, doc="Adam step of the decoder in FM and GA, default t/10 (the paper's lr; 0: lr); at lr = 1e-3 = t FM's decoder random-walks across update bins and FM ends below EO at equal rate"),
    "shift_env": Field(str, "same", choices=("same", "new"), doc="same: the pre-training scatterers, UE outside its circle; new: another environment"),
    "shift_offset_m": Field(float, 10.0, min=0.0, doc="where the track starts, m from the environment's centre"),
    "t": Field(float, 1e-3, min=1e-8, doc="update bin width, eq. (12): ~1/30 of the decoder weights' std"),
    "n_bins": Field(int, 256, min=2, max=65535, doc="update bins, eq. (13): range +-t * n_bins / 2"),
    "sigma": Field(float, 5e-2, min=1e-8),
    "alpha": Field(float, 1000.0, min=0.0),
    "n_bins_sweep": Field(list, [16, 64, 256, 1024], item=int, min=2, max=65535, doc="Table IV resolutions over the fixed range +-t * n_bins / 2"),
    "track_m": Field(float, 16.0, min=0.1, doc="length of the update-interval track, m"),
    "intervals_m": Field(list, [0.5, 1.0, 2.0, 4.0, 8.0], item=float, min=0.01, doc="fine-tuning intervals d, m"),
    "interval_steps": Field(int, 100, min=0, doc="fine-tuning steps per interval (warm start)"),
    "device": Field(str, "cpu", choices=DEVICE_CHOICES, doc="torch device of pre-training and fine-tuning: cpu, cuda, or auto (CUDA when present)"),
    "cache_dir": Field(str, "", doc="pre-trained model cache"),
}

_CFG_KEYS = (
    "n_ant", "n_sc", "width", "pretrain_samples", "pretrain_tasks", "pretrain_steps", "radius_m",
    "spacing_m", "n_finetune", "n_eval", "steps", "epochs", "lr", "decoder_lr", "t", "n_bins", "sigma", "alpha", "device", "cache_dir",
)


def study_cfg(study: dict[str, Any]) -> dict[str, Any]:
    """The study's settings after ``scale`` (paper overrides win over the quick values)."""
    s = dict(study)
    if s.get("scale") == "paper":
        s.update(PAPER_SCALE)
    return s


def _csi_cfg(s: dict[str, Any], seed: int, lmbda: float, **over: Any) -> dict[str, Any]:
    """A ``csi_feedback`` table of the study, on the backbone of RD weight ``lmbda``.

    ``scheme = "tm"`` (not a stage scheme) is resolved as ``none`` and set back after."""
    raw = {k: s[k] for k in _CFG_KEYS + ("shift_env", "shift_offset_m", "finetune_lmbda")}
    raw["pretrain_seed"] = int(derive_seed(seed, "csi-pretrain") % (2**31))
    raw["lmbda"] = float(lmbda)
    raw.update(over)
    tm = raw.get("scheme") == "tm"
    if tm:
        raw["scheme"] = "none"
    out = resolve_cfg(raw)
    return {**out, "scheme": "tm"} if tm else out


def nmse_at_rate(curve: list[tuple[float, float]], rate: float) -> float | None:
    """NMSE (dB) of an RD curve at ``rate``, linear in ``log(rate)`` between its points.

    ``curve`` holds ``(bits per dim, NMSE dB)`` pairs; None when ``rate`` lies outside the
    curve's rate range (no extrapolation) or the curve is empty.
    """
    pts = sorted((r, d) for r, d in curve if r > 0 and math.isfinite(r) and math.isfinite(d))
    if not pts or rate <= 0 or not pts[0][0] <= rate <= pts[-1][0]:
        return None
    for (r0, d0), (r1, d1) in zip(pts, pts[1:]):
        if r0 <= rate <= r1:
            w = 0.0 if r1 == r0 else (math.log(rate) - math.log(r0)) / (math.log(r1) - math.log(r0))
            return d0 + w * (d1 - d0)
    return pts[0][1]


def _deliver(srv: FeedbackServer, cls: str, device_id: int, res: Any, model: CSICompressor, H_ev: Any) -> dict[str, float]:
    """Device -> base station: real streams in, the BS's measurement out."""
    payloads, side = uplink(res, model.compress(H_ev), H_ev)
    out = srv.ingest(device_id, cls, payloads, side)
    n, dims = H_ev.shape[0], model.cfg.csi_dims
    out["latent_bits_estimated_per_dim"] = model.estimated_bits(H_ev) / (n * dims)
    out["update_bits_estimated_per_dim"] = res.update_ideal_bits / (n * dims)
    return out


def _row(experiment: str, label: str, cfg: dict[str, Any], out: dict[str, float], res: Any) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "scheme": label,
        "backbone_lmbda": float(cfg["lmbda"]),
        "lmbda": float(cfg["finetune_lmbda"]),
        "n_bins": int(cfg["n_bins"]),
        "t": float(cfg["t"]),
        "prior": str(cfg["prior"]),
        "regularize_update": bool(cfg["regularize_update"]),
        "nmse_db": float(out["nmse_db"]),
        "mse": float(out["mse"]),
        "rd_cost": float(cfg["finetune_lmbda"]) * float(out["mse"]) + float(out["bits_per_dim_total"]),
        "bits_per_dim_latent": float(out["bits_per_dim_latent"]),
        "bits_per_dim_update": float(out["bits_per_dim_update"]),
        "bits_per_dim_total": float(out["bits_per_dim_total"]),
        "latent_bits_estimated_per_dim": float(out["latent_bits_estimated_per_dim"]),
        "update_bits_estimated_per_dim": float(out["update_bits_estimated_per_dim"]),
        "update_nonzero": int(out["update_nonzero"]),
        "epochs": int(cfg["epochs"]),
        "finetune_steps": len(res.losses),
        "finetune_s": float(res.seconds),
        "finetune_flops": int(res.flops),
    }


def run(cfg: dict[str, Any], seed: int, out_dir: Path, progress: ProgressFn) -> dict[str, Any]:
    """Run the three experiments; write ``rd.parquet``, ``interval.parquet``, ``summary.json``.

    Parameters
    ----------
    cfg : dict
        The validated ``[study]`` table (:data:`SCHEMA`).
    seed : int
        Scenario seed: pre-training, the shifted environment and the tracks derive from it.
    out_dir : Path
    progress : ProgressFn

    Returns
    -------
    dict
        The RD table rows of the scheme comparison and the interval sweep (JSON-able).
    """
    s = study_cfg(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(str(s["device"]))
    lmbdas_bb = sorted(float(x) for x in s["backbone_lmbdas"])
    low = lmbdas_bb[0]  # the low-rate backbone FM fine-tunes
    backbones: dict[float, CSICompressor] = {}
    for i, lm in enumerate(lmbdas_bb):
        progress(f"pre-training backbones (cached): lambda = {lm:g}", i, len(lmbdas_bb))
        backbones[lm] = pretrained_compressor(_csi_cfg(s, seed, lm), device=dev)
    progress("pre-training backbones (cached)", len(lmbdas_bb), len(lmbdas_bb))
    base_cfg = _csi_cfg(s, seed, low)
    env = device_environment(base_cfg, ChannelTask.make("gbsm", base_cfg["n_ant"], 1, 0, derive_seed(seed, "csi-shift-env")))
    track_seed = derive_seed(seed, "csi-study-track")
    n_ft, n_ev = int(base_cfg["n_finetune"]), int(base_cfg["n_eval"])
    H = track_csi(base_cfg, env, float(s["shift_offset_m"]), n_ft + n_ev, track_seed)
    H_ft, H_ev = H[:n_ft], H[n_ft:]

    rows: list[dict[str, Any]] = []
    jobs: list[tuple[str, str, dict[str, Any]]] = []
    for lm in lmbdas_bb:  # No FT, EO, TM: one point per backbone, at its own RD weight
        for label, (scheme, over) in BACKBONE_SCHEMES.items():
            jobs.append(("schemes", label, _csi_cfg(s, seed, lm, scheme=scheme, finetune_lmbda=lm, **over)))
    for lm in s["lmbdas"]:  # FM and its kin on the low-rate backbone
        for label, (scheme, over) in LOW_RATE_SCHEMES.items():
            jobs.append(("schemes", label, _csi_cfg(s, seed, low, scheme=scheme, finetune_lmbda=float(lm), **over)))
    # Table IV: the resolution over a fixed range +-t * n_bins / 2 (fewer bins, wider ones)
    update_range = float(s["t"]) * int(s["n_bins"])
    for nb in s["n_bins_sweep"]:
        jobs.append(("quant_sweep", f"FM {nb} bins", _csi_cfg(s, seed, low, scheme="fm", n_bins=int(nb), t=update_range / int(nb))))
    work = WorkUnits(out_dir)  # completed units of work: a resumed study skips them (issue #22)
    for i, (exp, label, c) in enumerate(jobs):
        progress(f"{exp}: {label} (backbone lambda {c['lmbda']:g}, fine-tuning lambda {c['finetune_lmbda']:g})", i, len(jobs))
        key = f"rd-{i}-{exp}-{label}".replace(" ", "_")
        rows.append(work.rows(key, lambda: _scheme_row(exp, label, c, backbones[float(c["lmbda"])], H_ft, H_ev, seed, dev)))
    progress("schemes and resolutions", len(jobs), len(jobs))
    rd = pa.Table.from_pylist(rows)
    pq.write_table(rd, out_dir / "rd.parquet")

    interval_rows = _interval_study(s, seed, base_cfg, backbones[low], env, progress, work, dev)
    pq.write_table(pa.Table.from_pylist(interval_rows), out_dir / "interval.parquet")
    keys = ("experiment", "scheme", "backbone_lmbda", "lmbda", "n_bins", "nmse_db", "bits_per_dim_latent", "bits_per_dim_update", "bits_per_dim_total", "update_nonzero")
    summary = {
        "rd": [{k: r[k] for k in keys} for r in rows],
        "fm_vs_curves": _fm_vs_curves(rows),
        "interval": interval_rows,
        "interval_sweet_spot_m": min(interval_rows, key=lambda r: r["rd_cost"])["interval_m"] if interval_rows else None,
        "backbone_decoder_params": backbones[low].n_decoder_params(),
        "device": dev.type,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    return summary


def _scheme_row(exp: str, label: str, c: dict[str, Any], backbone: CSICompressor, H_ft: Any, H_ev: Any, seed: int, dev: Any) -> dict[str, Any]:
    """One unit of work of experiments 1-2: scheme ``label`` fine-tuned (or its translation
    modules trained) on ``H_ft`` ``[n_finetune, ...]``, ``H_ev`` coded and measured; its
    ``rd.parquet`` row. Its draws derive from ``(seed, label)`` alone."""
    ft_seed = derive_seed(seed, "csi-study-ft", label)
    if c["scheme"] == "tm":
        tm = train_translation(backbone, H_ft, c, seed=ft_seed, device=dev)
        out = evaluate_translation(backbone, tm, H_ev)
        out["latent_bits_estimated_per_dim"] = out["latent_bits_estimated"] / (H_ev.shape[0] * backbone.cfg.csi_dims)
        out["update_bits_estimated_per_dim"] = 0.0
        return _row(exp, label, c, out, tm)
    res = finetune(backbone, H_ft, c, seed=ft_seed, device=dev)
    srv = FeedbackServer({"ue": c}, seed)
    out = _deliver(srv, "ue", 0, res, res.device_model, H_ev)
    return _row(exp, label, c, out, res)


def _fm_vs_curves(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each FM point against the No FT, EO and TM curves (Fig. 7's comparison): their NMSE
    at FM's total rate (``<scheme>_nmse_db``, None outside a curve's rate range) and their
    best NMSE at a rate no higher than FM's (``<scheme>_best_nmse_db_at_or_below``, None if
    every point of the curve costs more)."""
    def curve(label: str) -> list[tuple[float, float]]:
        return [(r["bits_per_dim_total"], r["nmse_db"]) for r in rows if r["experiment"] == "schemes" and r["scheme"] == label]

    out = []
    for r in rows:
        if r["experiment"] == "schemes" and r["scheme"] == "FM":
            rate = r["bits_per_dim_total"]
            row: dict[str, Any] = {"lmbda": r["lmbda"], "bits_per_dim_total": rate, "fm_nmse_db": r["nmse_db"]}
            for k in BACKBONE_SCHEMES:
                name = k.replace(" ", "_").lower()
                row[f"{name}_nmse_db"] = nmse_at_rate(curve(k), rate)
                row[f"{name}_best_nmse_db_at_or_below"] = min((d for b, d in curve(k) if b <= rate), default=None)
            out.append(row)
    return out


def _interval_study(s: dict[str, Any], seed: int, base_cfg: dict[str, Any], backbone: CSICompressor, env: Any, progress: ProgressFn,
                    work: WorkUnits, device: Any = None) -> list[dict[str, Any]]:
    """Experiment 3: one ``interval.parquet`` row per interval ``d`` (each a unit of work in
    ``work``); none for an interval that leaves fewer than two windows on the track."""
    spacing = float(base_cfg["spacing_m"])
    n_total = int(round(float(s["track_m"]) / spacing))
    H = track_csi(base_cfg, env, float(s["shift_offset_m"]), n_total, derive_seed(seed, "csi-interval-track"))
    out_rows = []
    for j, d in enumerate(s["intervals_m"]):
        progress("update intervals", j, len(s["intervals_m"]))
        out_rows += work.rows(f"interval-{j}", lambda: _interval_rows(s, seed, j, float(d), H, spacing, base_cfg, backbone, device))
    progress("update intervals", len(s["intervals_m"]), len(s["intervals_m"]))
    return out_rows


def _interval_rows(s: dict[str, Any], seed: int, j: int, d: float, H: Any, spacing: float, base_cfg: dict[str, Any], backbone: CSICompressor,
                   device: Any) -> list[dict[str, Any]]:
    """FM every ``d`` metres along the track ``H`` ``[n_total, ...]`` (interval index ``j``):
    fine-tune on the last window, code the next; ``[row]``, or ``[]`` below two windows."""
    n_total = H.shape[0]
    per = max(1, int(round(d / spacing)))
    n_win = n_total // per
    if n_win < 2:
        return []
    c = _csi_cfg(s, seed, float(base_cfg["lmbda"]), scheme="fm", steps=int(s["interval_steps"]), epochs=0, n_eval=per)
    srv = FeedbackServer({"ue": c}, seed)
    model = backbone
    lat = upd = sq_err = 0.0
    n_eval = n_updates = 0
    nmse_lin = []
    for w in range(1, n_win):
        ft = H[(w - 1) * per : w * per]
        if ft.shape[0] > int(c["n_finetune"]):  # at most n_finetune samples, evenly spread
            ft = ft[np.linspace(0, ft.shape[0] - 1, int(c["n_finetune"])).round().astype(int)]
        ev = H[w * per : (w + 1) * per]
        res = finetune(model, ft, c, seed=derive_seed(seed, "csi-interval", j, w), amortize_samples=ev.shape[0], device=device)
        out = _deliver(srv, "ue", 0, res, res.device_model, ev)
        model = res.device_model
        lat += out["latent_bits"]
        upd += out["update_bits"]
        n_eval += ev.shape[0]
        nmse_lin.append((10 ** (out["nmse_db"] / 10), ev.shape[0]))
        sq_err += out["mse"] * ev.shape[0]
        n_updates += 1
    dims = backbone.cfg.csi_dims
    mean_lin = sum(v * n for v, n in nmse_lin) / max(1, sum(n for _, n in nmse_lin))
    mse = sq_err / max(1, n_eval)
    total = (lat + upd) / (n_eval * dims)
    return [
        {
            "interval_m": d,
            "n_updates": n_updates,
            "samples": int(n_eval),
            "bits_per_dim_latent": lat / (n_eval * dims),
            "bits_per_dim_update": upd / (n_eval * dims),
            "bits_per_dim_total": total,
            "nmse_db": 10 * math.log10(mean_lin) if mean_lin > 0 else -math.inf,
            "mse": mse,
            # the objective every interval was fine-tuned for (eq. 9 + 21), on real bits
            # and the base station's reconstruction: its minimum is the sweet spot
            "rd_cost": float(s["finetune_lmbda"]) * mse + total,
        }
    ]


def report(out_dir: Path) -> list[Path]:
    """Draw ``rd_schemes.png``, ``quant_sweep.png`` and ``interval.png`` from the tables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out_dir = Path(out_dir)
    paths: list[Path] = []
    rd = pq.read_table(out_dir / "rd.parquet").to_pylist()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label in SCHEMES:
        pts = sorted((r["bits_per_dim_total"], r["nmse_db"]) for r in rd if r["experiment"] == "schemes" and r["scheme"] == label)
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label)
    ax.set_xlabel("rate (latent + update), bits per CSI dimension (actual)")
    ax.set_ylabel("NMSE (dB)")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(True, alpha=0.3, which="both")
    ax.legend()
    ax.set_title("CSI feedback fine-tuning schemes")
    fig.tight_layout()
    paths.append(out_dir / "rd_schemes.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    sweep = sorted((r for r in rd if r["experiment"] == "quant_sweep"), key=lambda r: r["n_bins"])
    if sweep:
        paths.append(_annotated_curve(plt, sweep, [str(r["n_bins"]) for r in sweep], "FM: update quantization bins (Table IV)", out_dir / "quant_sweep.png"))
    ipath = out_dir / "interval.parquet"
    iv = pq.read_table(ipath).to_pylist() if ipath.exists() else []
    if iv:
        best = min(range(len(iv)), key=lambda i: iv[i]["rd_cost"])
        title = f"FM every d metres: sweet spot d = {iv[best]['interval_m']:g} m (least lambda*MSE + R)"
        paths.append(_annotated_curve(plt, iv, [f"{r['interval_m']:g} m" for r in iv], title, out_dir / "interval.png", best=best))
    return paths


def _annotated_curve(plt: Any, rows: list[dict[str, Any]], labels: list[str], title: str, path: Path, best: int | None = None) -> Path:
    """Total rate vs NMSE, one annotated point per row (``best`` starred); saved to ``path``."""
    fig, ax = plt.subplots(figsize=(6, 4.2))
    x = [r["bits_per_dim_total"] for r in rows]
    y = [r["nmse_db"] for r in rows]
    ax.plot(x, y, marker="o")
    if best is not None:
        ax.plot([x[best]], [y[best]], marker="*", markersize=16, color="tab:red", linestyle="none", label="sweet spot")
        ax.legend()
    for xi, yi, lab in zip(x, y, labels):
        ax.annotate(lab, (xi, yi))
    ax.set_xlabel("total rate (latent + update), bits per CSI dimension (actual)")
    ax.set_ylabel("NMSE (dB)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
