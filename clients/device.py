"""One device's turn in a round, without Flower.

``run_device_round`` is everything a device does between receiving the server's
instructions and replying: derive its data, build its individual SDNet on the learngene
unit, fine-tune locally, evaluate next to the classical detectors, and run the optional
stages its class enables (influence-guided fine-tuning, relevance pruning, CSI
feedback, through ``clients.stages``). ``clients/app.py`` only moves these inputs and outputs in and out of Flower
Messages, so all of this is testable without starting a simulation.

What persists on the device between rounds (its "state") is a flat
``dict[str, np.ndarray]``: the unit it inherited, its current detector weights, and
whatever each stage keeps. No data ever leaves a device; the evaluation-only side
channel (``side``) is labelled as such and never counted as feedback.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from clients.stages import DEVICE_STAGES
from common.profiles import DeviceProfile
from common.protocol import UNIT_VERSION
from common.scenario import Scenario
from common.stage import DeviceContext, StageResult
from common.runtime import resolve_device
from common.seeding import derive_seed, torch_generator

__all__ = ["DeviceRoundResult", "run_device_round", "device_data", "CrashInjected"]

_UNIT_PREFIX = "unit/"
_MODEL_PREFIX = "model/"
_META_KEY = "meta/json"
_ARCH_KEY = "arch/json"


class CrashInjected(RuntimeError):
    """Raised by a device whose class lists the round in ``crash_rounds``."""


@dataclass
class DeviceRoundResult:
    """What a device sends back (and keeps) after a round.

    Attributes
    ----------
    metrics : dict[str, float]
        ``ser`` (its SDNet on its validation set), ``ser_zf``, ``ser_mmse``,
        ``ser_hblind_fit`` (classes with ``hblind_baseline``), ``train_loss``, stage metrics prefixed ``<stage>_``...
    flops : int
        FLOPs actually run this round (training + evaluation + stages).
    n_params : int
        Trainable parameters of the detector it ends the round with.
    payloads : dict[str, bytes]
        Entropy-coded uplink bitstreams.
    side : dict[str, np.ndarray]
        Evaluation-only side channel.
    state : dict[str, np.ndarray]
        What the device keeps for its next round.
    wall_s : float
        Measured wall time of the device's work.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    flops: int = 0
    n_params: int = 0
    payloads: dict[str, bytes] = field(default_factory=dict)
    side: dict[str, np.ndarray] = field(default_factory=dict)
    state: dict[str, np.ndarray] = field(default_factory=dict)
    wall_s: float = 0.0


def _pack_meta(meta: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8).copy()


def _unpack_meta(arr: np.ndarray) -> dict[str, Any]:
    return json.loads(arr.astype(np.uint8).tobytes().decode())


def _architecture(model: Any) -> dict[str, Any]:
    """SDNet constructor arguments that rebuild ``model``'s shapes (pruned or not)."""
    return {
        "n_r": int(model.n_r),
        "n_t": int(model.n_t),
        "n_conv": int(model.n_conv),
        "widths": [int(w) for w in model.widths],
        "input_rows": [int(r) for r in model.input_rows],
        "col_upsample": int(model.col_upsample),
    }


def device_data(profile: DeviceProfile, cfg: dict[str, Any], cache_dir: str) -> tuple[Any, Any]:
    """The device's own train/validation detection batches (cached channels under the
    scenario's ``[server] cache_dir`` root, own seed)."""
    import torch

    from common.channels.cache import cached_channels
    from common.runtime import cache_root
    from common.phy.dataset import make_detection_batch

    n_train, n_val = int(cfg["train_samples"]), int(cfg["val_samples"])
    H = cached_channels(profile.task, n_train + n_val, derive_seed(profile.seed, "channels"), cache_dir=cache_root(cache_dir) / "channels")
    batch = make_detection_batch(
        H, profile.snr_db, n_pilots=profile.n_pilots, generator=torch_generator(profile.seed, "symbols")
    )
    idx = torch.arange(n_train + n_val)
    return batch.subset(idx[:n_train]), batch.subset(idx[n_train:])


def run_device_round(
    scenario: Scenario,
    profile: DeviceProfile,
    round_: int,
    unit_arrays: dict[str, np.ndarray] | None,
    unit_meta: dict[str, Any] | None,
    state: dict[str, np.ndarray],
    instructions: dict[str, Any] | None = None,
) -> DeviceRoundResult:
    """Run one device round.

    Parameters
    ----------
    scenario : Scenario
        The resolved scenario the server shipped at registration.
    profile : DeviceProfile
        This device (``common.profiles.device_profile``).
    round_ : int
        Server round, from 1.
    unit_arrays, unit_meta : optional
        The learngene unit, when the server sent one this round (first participation or
        a new unit version); otherwise the device uses the unit it kept.
    state : dict[str, np.ndarray]
        What the device kept from its previous rounds (empty at first).
    instructions : dict, optional
        The server's instruction ConfigRecord for this round (``round``, ``device-id``,
        ``unit-version`` and stage keys such as ``csi-decoder-tag``); stages read it
        through ``DeviceContext.instructions``.

    Returns
    -------
    DeviceRoundResult
    """
    t0 = time.perf_counter()
    cfg = profile.cfg
    if round_ in set(cfg["crash_rounds"]):
        raise CrashInjected(f"device {profile.device_id} ({profile.class_name}) crashes in round {round_} (crash_rounds)")
    if cfg["workload"] == "none":
        return DeviceRoundResult(wall_s=time.perf_counter() - t0, state=dict(state))

    import torch

    from common.learngene.training import Redraw, evaluate_ser, finetune
    from common.learngene import LearngeneUnit, expand, individual_sdnet
    from common.learngene.federation import unit_params
    from common.models.complexity import count_flops, count_parameters
    from common.models.sdnet import SDNet
    from common.phy.metrics import baseline_sers

    torch.manual_seed(derive_seed(profile.seed, "torch", round_))
    new_state: dict[str, np.ndarray] = {}
    unit_metrics: dict[str, float] = {}
    if unit_arrays is not None:
        unit = LearngeneUnit.from_arrays(unit_arrays, dict(unit_meta or {}))
        fresh_unit = True
    else:
        kept = {k[len(_UNIT_PREFIX):]: v for k, v in state.items() if k.startswith(_UNIT_PREFIX)}
        if not kept or _META_KEY not in state:
            raise RuntimeError(f"device {profile.device_id}: no learngene unit received and none kept from earlier rounds")
        unit = LearngeneUnit.from_arrays(kept, _unpack_meta(state[_META_KEY]))
        fresh_unit = False
    for stage, half in DEVICE_STAGES.items():  # stages that move the unit on (coded steps to a new version)
        receive = getattr(half, "receive_unit", None)
        if receive is not None and cfg.get(stage) is not None:
            held = unit.meta["content_hash"]
            unit, got = receive(unit, dict(instructions or {}), cfg[stage])
            unit_metrics.update({f"{stage}_{k}": float(v) for k, v in got.items()})
            fresh_unit = fresh_unit or unit.meta["content_hash"] != held
    want = (instructions or {}).get(UNIT_VERSION)
    if want and want != unit.meta["content_hash"]:
        raise RuntimeError(f"device {profile.device_id}: told to train from unit {str(want)[:12]}, holds {unit.meta['content_hash'][:12]}")
    new_state.update({_UNIT_PREFIX + k: v for k, v in unit.to_arrays().items()})
    new_state[_META_KEY] = _pack_meta(dict(unit.meta))

    strategy = str(scenario.data["manufacturer"]["strategy"])
    model = individual_sdnet(unit, profile.n_rx, profile.n_tx, profile.n_conv)
    anchors = expand(unit, model, strategy)
    kept_model = {k[len(_MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(_MODEL_PREFIX)}
    if kept_model and (not fresh_unit or unit_metrics):
        # the detector the device ended its last round with (possibly pruned by a stage);
        # a new unit version (federated loop) replaces the inherited layers, the rest stays
        arch = _unpack_meta(state[_ARCH_KEY])
        model = SDNet(**arch)
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in kept_model.items()})
        anchors = {k: a for k, a in anchors.items() if k in dict(model.named_parameters()) and model.get_parameter(k).shape == a.shape}
        if fresh_unit:
            with torch.no_grad():
                for k, a in anchors.items():
                    model.get_parameter(k).copy_(a)

    train, val = device_data(profile, cfg, str(scenario.data["server"]["cache_dir"]))
    input_shape = tuple(train.sdnet_input.shape[1:])
    # fine-tuning runs on the class's torch device (finetune moves batches and anchors
    # there); evaluation and the stages run on the CPU copy the device keeps
    model.to(resolve_device(str(cfg["device"])))
    res = finetune(
        model,
        train,
        epochs=int(cfg["epochs"]),
        batch_size=int(cfg["batch_size"]),
        lr=float(cfg["lr"]),
        anchors=anchors,
        lam=float(cfg["lam"]),
        generator=torch_generator(profile.seed, "finetune", round_),
        redraw=Redraw.per(cfg["train_draws"], profile.n_pilots, torch_generator(profile.seed, "redraw", round_)),
    )
    model.cpu()
    flops = int(res.flops)
    metrics: dict[str, float] = {
        "ser": float(evaluate_ser(model, val)),
        "train_loss": float(res.loss_per_epoch[-1]) if res.loss_per_epoch else float("nan"),
        **unit_metrics,
    }
    flops += count_flops(model, (1, *input_shape)) * len(val)
    fit_from = train if bool(cfg["hblind_baseline"]) else None
    metrics.update({k: float(v) for k, v in baseline_sers(val, fit_from).items() if k in ("ser_zf", "ser_mmse", "ser_hblind_fit")})

    out = DeviceRoundResult()
    ctx = DeviceContext(
        device_id=profile.device_id,
        device_class=profile.class_name,
        round=round_,
        seed=derive_seed(profile.seed, "stage", round_),
        task=profile.task,
        snr_db=profile.snr_db,
        model=model,
        train=train,
        val=val,
        instructions=dict(instructions or {}),
        torch_device=str(cfg["device"]),
        unit=unit,
        unit_params=unit_params(strategy, model.n_conv, unit.n_layers),
    )
    for stage, half in DEVICE_STAGES.items():
        stage_cfg = cfg.get(stage)
        if stage_cfg is None:
            continue
        ctx.state = {k[len(stage) + 1:]: v for k, v in state.items() if k.startswith(stage + "/")}
        sr: StageResult = half.run_device(ctx, stage_cfg)
        metrics.update({f"{stage}_{k}": float(v) for k, v in sr.metrics.items()})
        flops += int(sr.flops)
        out.payloads.update(sr.payloads)
        out.side.update(sr.side)
        new_state.update({f"{stage}/{k}": v for k, v in sr.state.items()})
        if sr.model is not None:
            ctx.model = model = sr.model

    new_state.update({_MODEL_PREFIX + k: v.detach().cpu().numpy() for k, v in model.state_dict().items()})
    new_state[_ARCH_KEY] = _pack_meta(_architecture(model))
    out.metrics = metrics
    out.flops = flops
    out.n_params = int(count_parameters(model))
    out.state = new_state
    out.wall_s = time.perf_counter() - t0
    return out
