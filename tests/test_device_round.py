"""One device's round without Flower: learngene expansion, fine-tuning, every stage, and
the base station decoding what the device sends."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.device import CrashInjected, run_device_round
from common.profiles import device_profile
from common.channels import ChannelTask
from common.scenario import parse_scenario
from common.learngene.collective import CollectiveConfig, train_collective



def _scenario(tmp: Path, stage_tables: dict[str, dict]) -> object:
    cls = {
        "name": "dev",
        "count": 2,
        "n_conv": 6,
        "n_tx": 4,
        "train_samples": 96,
        "val_samples": 96,
        "epochs": 1,
        "batch_size": 32,
        "tasks": [100],
        "crash_rounds": [9],
        **stage_tables,
    }
    raw = {
        "name": "unit",
        "seed": 3,
        "rounds": 2,
        "channels": {"source": "gbsm"},
        "manufacturer": {"n_conv": 6, "unit_layers": 2, "tasks": 1},
        "server": {"cache_dir": str(tmp / "cache")},
        "fleet": [cls],
    }
    return parse_scenario(raw)


@pytest.fixture(scope="module")
def unit():  # a tiny collective model and its unit (N_conv = 6, 2-layer unit)
    cfg = CollectiveConfig(
        tasks=(ChannelTask.make("gbsm", 32, 8, 0, 3),), n_conv=6, samples_per_task=64, epochs_per_task=1, batch_size=32, unit_layers=2, val_samples=32, seed=3
    )
    return train_collective(cfg).unit


def test_round_expands_unit_and_keeps_state(tmp_path: Path, unit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLEET_CACHE_DIR", str(tmp_path / "cache"))
    s = _scenario(tmp_path, {})
    p = device_profile(s, 1)
    r1 = run_device_round(s, p, 1, unit.to_arrays(), dict(unit.meta), {})
    assert 0.0 <= r1.metrics["ser"] <= 1.0 and 0.0 <= r1.metrics["ser_zf"] <= 1.0
    assert r1.flops > 0 and r1.n_params > 0
    # round 2: no unit sent; the device uses the one it kept and its trained weights
    r2 = run_device_round(s, p, 2, None, None, r1.state)
    assert r2.n_params == r1.n_params
    assert np.array_equal(r2.state["unit/0.weight"], unit.tensors["0.weight"])
    with pytest.raises(RuntimeError, match="no learngene unit"):
        run_device_round(s, p, 2, None, None, {})
    with pytest.raises(CrashInjected):
        run_device_round(s, p, 9, None, None, r1.state)
    # same seed, same round -> same numbers
    again = run_device_round(s, p, 1, unit.to_arrays(), dict(unit.meta), {})
    assert again.metrics == r1.metrics


def test_prune_stage_fits_budget_and_survives_next_round(tmp_path: Path, unit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLEET_CACHE_DIR", str(tmp_path / "cache"))
    full = run_device_round(_scenario(tmp_path, {}), device_profile(_scenario(tmp_path, {}), 0), 1, unit.to_arrays(), dict(unit.meta), {})
    budget = 2_000_000
    s = _scenario(tmp_path, {"prune": {"budget_flops": budget, "retrain_epochs": 1, "relevance_samples": 32, "batch_size": 32}})
    p = device_profile(s, 0)
    r1 = run_device_round(s, p, 1, unit.to_arrays(), dict(unit.meta), {})
    assert r1.metrics["prune_flops_after"] <= budget < r1.metrics["prune_flops_before"]
    assert r1.n_params < full.n_params
    r2 = run_device_round(s, p, 2, None, None, r1.state)  # the pruned architecture is rebuilt from state
    assert r2.n_params <= r1.n_params


def test_influence_stage_reports_targets(tmp_path: Path, unit, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLEET_CACHE_DIR", str(tmp_path / "cache"))
    s = _scenario(tmp_path, {"influence": {"method": "first_order", "budget": 16, "steps": 1, "instance_size": 8, "min_genie_ber": 0.0}})
    r = run_device_round(s, device_profile(s, 0), 1, unit.to_arrays(), dict(unit.meta), {})
    keys = [k for k in r.metrics if k.startswith("influence_")]
    assert keys, r.metrics
    assert r.flops > 0


def test_csi_stage_bitstreams_decode_at_the_base_station(tmp_path: Path, unit, monkeypatch: pytest.MonkeyPatch) -> None:
    from common.csi.base_station import FeedbackServer

    monkeypatch.setenv("AIRFLEET_CACHE_DIR", str(tmp_path / "cache"))
    csi = {
        "n_ant": 16, "n_sc": 16, "width": 8, "pretrain_samples": 64, "pretrain_tasks": 1, "pretrain_steps": 5,
        "n_finetune": 16, "n_eval": 8, "steps": 2, "batch": 8, "cache_dir": str(tmp_path / "csi-cache"),
    }
    s = _scenario(tmp_path, {"csi_feedback": csi})
    r = run_device_round(s, device_profile(s, 0), 1, unit.to_arrays(), dict(unit.meta), {})
    assert set(r.payloads) == {"csi_update", "csi_latents"}
    bs = FeedbackServer({"dev": s.classes[0]["csi_feedback"]}, s.seed)
    out = bs.ingest(0, "dev", dict(r.payloads), dict(r.side))
    assert np.isfinite(out["nmse_db"]) and out["latent_bits"] > 0
    # a truncated stream is rejected and leaves the decoder exactly as it was
    after = {k: v.copy() for k, v in bs.decoder_state(0).items()}
    bad = dict(r.payloads)
    bad["csi_update"] = bad["csi_update"][: len(bad["csi_update"]) // 2]
    with pytest.raises(ValueError):
        bs.ingest(0, "dev", bad, dict(r.side))
    assert all(np.array_equal(after[k], v) for k, v in bs.decoder_state(0).items())


def test_csi_device_goes_back_to_the_decoder_the_base_station_kept(tmp_path: Path) -> None:
    """After the base station rejects an uplink, the next round's instructions carry the
    decoder it kept; the device returns to it and its next update is accepted again."""
    from clients.stages.csi_feedback import CsiFeedbackDevice
    from common.csi import DECODER_TAG_KEY, FeedbackServer, resolve_cfg
    from common.stage import DeviceContext

    cfg = resolve_cfg({
        "n_ant": 16, "n_sc": 16, "width": 8, "pretrain_samples": 64, "pretrain_steps": 5, "n_finetune": 16,
        "n_eval": 8, "steps": 4, "batch": 8, "lr": 2e-2, "decoder_lr": 0.0, "cache_dir": str(tmp_path / "csi-cache"),
    })  # decoder_lr 0: the decoder takes lr's large step, so each round's update moves it
    bs = FeedbackServer({"dev": cfg}, seed=3)
    task = ChannelTask.make("gbsm", 16, 1, 100, 3)

    def device_round(rnd: int, state: dict, tag: int | None):
        ctx = DeviceContext(0, "dev", rnd, 10 + rnd, task, 20.0, state=state, instructions={} if tag is None else {DECODER_TAG_KEY: tag})
        return CsiFeedbackDevice().run_device(ctx, cfg)

    r1 = device_round(1, {}, bs.decoder_tag(0, "dev"))
    bs.ingest(0, "dev", dict(r1.payloads), dict(r1.side))
    r2 = device_round(2, r1.state, bs.decoder_tag(0, "dev"))
    assert r1.metrics["resync"] == 0 and r2.metrics["resync"] == 0
    kept = bs.decoder_tag(0, "dev")
    bad = dict(r2.payloads)
    bad["csi_update"] = bad["csi_update"][:-3]
    with pytest.raises(ValueError):
        bs.ingest(0, "dev", bad, dict(r2.side))
    assert bs.decoder_tag(0, "dev") == kept

    # without the tag the device codes against a decoder the base station never got
    with pytest.raises(ValueError, match="made against decoder"):
        stale = device_round(3, r2.state, None)
        bs.ingest(0, "dev", dict(stale.payloads), dict(stale.side))
    r3 = device_round(3, r2.state, kept)
    assert r3.metrics["resync"] == 1
    out = bs.ingest(0, "dev", dict(r3.payloads), dict(r3.side))
    assert np.isfinite(out["nmse_db"]) and out["update_bits"] > 0
    assert out["nmse_db"] == pytest.approx(r3.metrics["nmse_db_device"], abs=1e-4)

    # a base station that lost its state holds the pre-trained decoder: the device resets
    fresh = FeedbackServer({"dev": cfg}, seed=3)
    assert device_round(4, r3.state, fresh.decoder_tag(0, "dev")).metrics["resync"] == 2
    with pytest.raises(ValueError, match="matches neither"):
        device_round(4, r3.state, kept ^ 0x5A5A)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the class's device through the error a CPU-only machine gives for cuda")
def test_csi_stage_fine_tunes_on_the_class_device_unless_its_table_names_one(tmp_path: Path) -> None:
    """``csi_feedback.device = "class"`` (the default) takes the class's ``device``; an
    explicit ``cpu`` in the stage table wins over the class's ``cuda``."""
    from clients.stages.csi_feedback import CsiFeedbackDevice
    from common.csi import resolve_cfg
    from common.stage import DeviceContext

    base = {
        "n_ant": 16, "n_sc": 16, "width": 8, "pretrain_samples": 64, "pretrain_steps": 5, "n_finetune": 16,
        "n_eval": 8, "steps": 2, "batch": 8, "cache_dir": str(tmp_path / "csi-cache"),
    }
    task = ChannelTask.make("gbsm", 16, 1, 100, 3)
    ctx = DeviceContext(0, "dev", 1, 11, task, 20.0, torch_device="cuda")
    assert resolve_cfg(base)["device"] == "class"
    with pytest.raises(ValueError, match="cuda"):
        CsiFeedbackDevice().run_device(ctx, resolve_cfg(base))
    r = CsiFeedbackDevice().run_device(ctx, resolve_cfg({**base, "device": "cpu"}))
    assert r.payloads


def test_per_epoch_draws_train_on_fresh_noise_over_the_device_channels(tmp_path: Path, unit, monkeypatch: pytest.MonkeyPatch, record_redraws: Callable[[], AbstractContextManager[list]]) -> None:
    monkeypatch.setenv("AIRFLEET_CACHE_DIR", str(tmp_path / "cache"))
    from clients.device import device_data

    raw = dict(_scenario(tmp_path, {}).data)
    fleet = {k: v for k, v in raw["fleet"][0].items() if k != "train_draws"} | {"epochs": 2}
    raw["fleet"] = [fleet]  # no train_draws key: the class default, per-epoch
    s = parse_scenario(raw)
    p = device_profile(s, 1)
    with record_redraws() as seen:
        r = run_device_round(s, p, 1, unit.to_arrays(), dict(unit.meta), {})
    train, _ = device_data(p, p.cfg, str(s.data["server"]["cache_dir"]))
    assert len(seen) == 2 and all(torch.equal(H, train.H) for H in seen)  # one redraw per epoch, the device's own channels
    assert run_device_round(s, p, 1, unit.to_arrays(), dict(unit.meta), {}).metrics == r.metrics  # same seed, same numbers
    raw["fleet"] = [fleet | {"train_draws": "fixed"}]  # the paper's samples, drawn once
    s = parse_scenario(raw)
    with record_redraws() as seen:
        fixed = run_device_round(s, device_profile(s, 1), 1, unit.to_arrays(), dict(unit.meta), {})
    assert seen == [] and fixed.metrics["train_loss"] != r.metrics["train_loss"]
