"""The federated learngene loop without Flower: devices code unit updates, the base station
decodes, aggregates (checked against oracles computed here), publishes versions and
sends them down as coded steps; malformed streams leave its state as it was."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clients.device import run_device_round
from clients.stages.unit_update import UnitUpdateDevice
from common.coding.bitstream import BitstreamError
from common.coding.registry import make_codec
from common.learngene import LearngeneUnit
from common.learngene.federation import BASES_KEY, DOWN_KEY, META_KEY, UPDATE_KEY, WeightedMean, unit_params, unit_update
from common.profiles import device_profile
from common.protocol import UNIT_VERSION
from common.scenario import ScenarioError, parse_scenario
from server.stages.unit_update import UNIT_VERSIONS_TABLE, UnitUpdateBaseStation


def _unit(seed: int = 0) -> LearngeneUnit:
    g = np.random.default_rng(seed)
    t = {"0.weight": g.normal(0, 0.1, (4, 4, 3, 3)), "0.bias": g.normal(0, 0.1, 4), "1.weight": g.normal(0, 0.1, (4, 4, 3, 3)), "1.bias": g.normal(0, 0.1, 4)}
    return LearngeneUnit({k: v.astype(np.float32) for k, v in t.items()}, {"n_r": 32, "n_t": 8})


def _cfg(codec: str = "fp32", down: str = "fp32", **options: float) -> dict:
    return {"codec": codec, "options": dict(options), "down_codec": down, "down_options": {}}


def _dev(did: int, cls: str) -> SimpleNamespace:  # what the stage reads of a DeviceProfile
    return SimpleNamespace(device_id=did, class_name=cls)


def _updates(unit: LearngeneUnit, n: int, seed: int = 1) -> list[dict[str, np.ndarray]]:
    g = np.random.default_rng(seed)
    return [{k: g.normal(0, 1e-2, v.shape).astype(np.float32) for k, v in unit.tensors.items()} for _ in range(n)]


def _bs(classes: dict[str, dict], weights: dict[str, float], **fed: object) -> UnitUpdateBaseStation:
    return UnitUpdateBaseStation(classes, 0, dict(fed), weights)


def test_weighted_mean_equals_numpy_oracle_of_the_decoded_updates() -> None:
    unit = _unit()
    bs = _bs({"a": _cfg("int8"), "b": _cfg("fp16")}, {"a": 100.0, "b": 300.0})
    bs.begin_round(1, unit)
    devices = [_dev(0, "a"), _dev(1, "a"), _dev(2, "b")]
    streams = [make_codec(("int8", "int8", "fp16")[i]).encode(u).data for i, u in enumerate(_updates(unit, 3))]
    for d, s in zip(devices, streams):
        bs.ingest(d, {UPDATE_KEY: s}, {})
    rows = bs.end_round(1)[UNIT_VERSIONS_TABLE]
    # oracle: decode every stream independently, numpy weighted mean, float32 sum
    decoded = [make_codec(c).decode(s) for c, s in zip(("int8", "int8", "fp16"), streams)]
    w = np.array([100.0, 100.0, 300.0])
    new = bs.cohorts["fleet"].current
    for k, base in unit.tensors.items():
        mean = np.tensordot(w / w.sum(), np.stack([d[k].astype(np.float64) for d in decoded]), axes=1)
        np.testing.assert_allclose(new.tensors[k], base + mean, rtol=0, atol=1e-7)
    assert [r["generation"] for r in rows] == [0, 1]
    assert rows[1]["parent"] == unit.meta["content_hash"] and rows[1]["version"] == new.meta["content_hash"]
    assert rows[1]["contributors"] == 3 and rows[1]["up_bits"] == 8 * sum(len(s) for s in streams)
    assert rows[1]["down_bits"] > 8 * 4 * unit.n_params  # fp32 step: the raw floats and their frame


def test_streamed_mean_matches_stacked_mean() -> None:
    ups = _updates(_unit(), 50, seed=4)
    w = np.random.default_rng(5).uniform(1, 10, 50)
    m = WeightedMean()
    for wi, u in zip(w, ups):
        m.add(float(wi), u)
    out = m.mean()
    for k in ups[0]:
        np.testing.assert_allclose(out[k], np.average(np.stack([u[k] for u in ups]), axis=0, weights=w), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("rule", ["fedmedian", "fedtrimmedavg", "fedavgm", "krum"])
def test_flower_rules_equal_their_oracles(rule: str) -> None:
    unit = _unit()
    opts = {"fedtrimmedavg": {"beta": 0.2}, "fedavgm": {"server_momentum": 0.0}}.get(rule, {})
    bs = _bs({"a": _cfg()}, {"a": 1.0}, aggregation=rule, options=opts)
    bs.begin_round(1, unit)
    ups = _updates(unit, 5)
    for i, u in enumerate(ups):
        bs.ingest(_dev(i, "a"), {UPDATE_KEY: make_codec("fp32").encode(u).data}, {})
    bs.end_round(1)
    new = bs.cohorts["fleet"].current.tensors
    for k, base in unit.tensors.items():
        stack = np.stack([base + u[k] for u in ups])
        if rule == "fedmedian":
            want = np.median(stack, axis=0)
        elif rule == "fedtrimmedavg":  # beta 0.2 of 5: drop the lowest and the highest per element
            want = np.sort(stack, axis=0)[1:4].mean(axis=0)
        elif rule == "fedavgm":  # without momentum at server lr 1: the plain mean
            want = stack.mean(axis=0)
        else:  # Krum (f = 0): the update with the least summed squared distance to its n - 2 nearest
            flat = np.stack([np.concatenate([(unit.tensors[j] + u[j]).ravel() for j in sorted(u)]) for u in ups]).astype(np.float64)
            d = ((flat[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
            score = [np.sort(row)[1:4].sum() for row in d]
            want = stack[int(np.argmin(score))]
        np.testing.assert_allclose(new[k], want, rtol=0, atol=2e-7)


@pytest.mark.parametrize(
    "bad",
    [
        lambda s: s[: len(s) // 2],  # truncated
        lambda s: s[:20] + bytes([s[20] ^ 0xFF]) + s[21:],  # a flipped byte (CRC)
        lambda s: b"\x00" * 64,  # garbage
        lambda s: make_codec("fp16").encode({"0.bias": np.zeros(4, np.float32)}).data,  # another codec's stream
    ],
)
def test_a_bad_stream_fails_and_leaves_the_base_station_unchanged(bad) -> None:  # noqa: ANN001
    unit = _unit()
    bs = _bs({"a": _cfg("int8")}, {"a": 1.0})
    bs.begin_round(1, unit)
    ups = _updates(unit, 2)
    codec = make_codec("int8")
    bs.ingest(_dev(0, "a"), {UPDATE_KEY: codec.encode(ups[0]).data}, {})
    co = bs.cohorts["fleet"]
    before = ({k: v.copy() for k, v in co.mean.sums.items()}, co.mean.weight, co.mean.count, co.up_bits, set(co.contributors), dict(bs.held))
    with pytest.raises((BitstreamError, ValueError)):
        bs.ingest(_dev(1, "a"), {UPDATE_KEY: bad(codec.encode(ups[1]).data)}, {})
    after = ({k: v.copy() for k, v in co.mean.sums.items()}, co.mean.weight, co.mean.count, co.up_bits, set(co.contributors), dict(bs.held))
    assert after[1:] == before[1:] and all(np.array_equal(after[0][k], before[0][k]) for k in before[0])


def test_updates_in_another_tensor_order_are_aggregated_by_name() -> None:
    """The base station aggregates by name whatever order a stream lists its tensors in (the
    first update's order included); the oracle is numpy's mean of the updates by name."""
    unit = _unit()
    bs = _bs({"a": _cfg()}, {"a": 1.0})
    bs.begin_round(1, unit)
    ups = _updates(unit, 3, seed=7)
    orders = [list(unit.tensors)[::-1], list(unit.tensors), list(unit.tensors)[1:] + list(unit.tensors)[:1]]
    for i, (u, order) in enumerate(zip(ups, orders)):
        bs.ingest(_dev(i, "a"), {UPDATE_KEY: make_codec("fp32").encode({k: u[k] for k in order}).data}, {})
    mean = bs.cohorts["fleet"].mean.mean()
    assert sorted(mean) == sorted(unit.tensors)
    for k in unit.tensors:
        np.testing.assert_allclose(mean[k], np.mean([u[k].astype(np.float64) for u in ups], axis=0), rtol=0, atol=1e-9)


def test_wrong_shapes_are_refused() -> None:
    unit = _unit()
    bs = _bs({"a": _cfg()}, {"a": 1.0})
    bs.begin_round(1, unit)
    forged = {k: np.zeros((v.size + 1,), np.float32) for k, v in unit.tensors.items()}
    with pytest.raises(ValueError, match="shape"):
        bs.ingest(_dev(0, "a"), {UPDATE_KEY: make_codec("fp32").encode(forged).data}, {})
    assert bs.cohorts["fleet"].mean.count == 0


@pytest.mark.parametrize("down", ["fp32", "int4"])
def test_devices_behind_receive_the_steps_and_hold_the_exact_version(down: str) -> None:
    unit = _unit()
    cfg = _cfg("fp16", down)
    bs = _bs({"a": cfg}, {"a": 1.0})
    ups = _updates(unit, 4)
    for rnd in (1, 2):  # device 0 contributes in both rounds; device 1 never replies after round 1
        bs.begin_round(rnd, unit)
        ins = bs.instructions(_dev(0, "a"))
        assert ins[UNIT_VERSION] == bs.cohorts["fleet"].current.meta["content_hash"]
        bs.ingest(_dev(0, "a"), {UPDATE_KEY: make_codec("fp16").encode(ups[rnd]).data}, {})
        bs.end_round(rnd)
    co = bs.cohorts["fleet"]
    assert len(co.versions) == 3
    dev = UnitUpdateDevice()
    # device 1 holds v0: two steps; device 0 holds v1: one step
    for did, holds, n_steps in ((1, co.versions[0], 2), (0, co.versions[1], 1)):
        ins = bs.instructions(_dev(did, "a"))
        assert len(ins[DOWN_KEY]) == n_steps and json.loads(ins[META_KEY])["content_hash"] == ins[UNIT_VERSION]
        got, m = dev.receive_unit(holds, ins, cfg)
        assert got.meta["content_hash"] == co.current.meta["content_hash"]  # bit-exact tensors, whatever the down codec
        assert all(np.array_equal(got.tensors[k], co.current.tensors[k]) for k in got.tensors)
        assert m["down_bits"] == 8 * sum(len(s) for s in ins[DOWN_KEY])
    # a device that already applied the steps (its reply timed out: the server could not know) skips them
    ins = bs.instructions(_dev(1, "a"))
    got, _ = dev.receive_unit(co.versions[1], ins, cfg)
    assert got.meta["content_hash"] == co.current.meta["content_hash"]
    # and one up to date gets none
    bs.held[1] = co.current.meta["content_hash"]
    assert DOWN_KEY not in bs.instructions(_dev(1, "a")) and BASES_KEY not in bs.instructions(_dev(1, "a"))


def test_publication_rules_and_cohorts() -> None:
    unit = _unit()
    bs = _bs({"a": _cfg(), "b": _cfg("int8")}, {"a": 1.0, "b": 1.0}, cohort="class", publish_every_rounds=0, publish_after_updates=2)
    bs.begin_round(1, unit)
    ups = _updates(unit, 3)
    bs.ingest(_dev(0, "a"), {UPDATE_KEY: make_codec("fp32").encode(ups[0]).data}, {})
    bs.ingest(_dev(1, "b"), {UPDATE_KEY: make_codec("int8").encode(ups[1]).data}, {})
    assert [r["cohort"] for r in bs.end_round(1)[UNIT_VERSIONS_TABLE]] == ["a", "b"]  # the roots only: one update each
    bs.ingest(_dev(0, "a"), {UPDATE_KEY: make_codec("fp32").encode(ups[2]).data}, {})
    rows = bs.end_round(2)[UNIT_VERSIONS_TABLE]
    assert [(r["cohort"], r["contributors"], r["round_published"]) for r in rows] == [("a", 1, 2)]  # two updates from one device
    assert len(bs.cohorts["b"].versions) == 1


def _scenario(tmp: Path, stage: dict | None = None, federation: dict | None = None, prune: bool = False, epochs: int = 1) -> object:
    cls = {"name": "dev", "count": 2, "n_conv": 6, "n_tx": 4, "train_samples": 64, "val_samples": 64, "epochs": epochs, "batch_size": 32, "tasks": [100]}
    if stage is not None:
        cls["unit_update"] = stage
    if prune:
        cls["prune"] = {"budget_flops": 1_000_000}
    m = {"n_conv": 6, "unit_layers": 2, "tasks": 1}
    if federation is not None:
        m["federation"] = federation
    raw = {"name": "fed", "seed": 3, "rounds": 2, "channels": {"source": "gbsm"}, "manufacturer": m, "server": {"cache_dir": str(tmp / "cache")}, "fleet": [cls]}
    return parse_scenario(raw)


@pytest.mark.parametrize(
    "stage, federation, prune, key",
    [
        ({"codec": "nope"}, None, False, "fleet[0].unit_update.codec"),
        ({"codec": "topk", "options": {"fraction": 2.0}}, None, False, "fleet[0].unit_update.codec"),
        ({"down_codec": "qsgd", "down_options": {"levelz": 3}}, None, False, "fleet[0].unit_update.down_codec"),
        ({}, {"aggregation": "fedsgd"}, False, "manufacturer.federation.aggregation"),
        ({}, {"aggregation": "krum", "options": {"beta": 0.1}}, False, "manufacturer.federation.options.beta"),
        ({}, {"publish_every_rounds": 0}, False, "manufacturer.federation"),
        ({}, None, True, "fleet[0].unit_update"),
    ],
)
def test_bad_tables_name_the_key(tmp_path: Path, stage: dict, federation: dict | None, prune: bool, key: str) -> None:
    with pytest.raises(ScenarioError) as e:
        _scenario(tmp_path, stage, federation, prune)
    assert e.value.key == key, str(e.value)


def test_resolved_scenario_carries_the_rule_and_revalidates(tmp_path: Path) -> None:
    s = _scenario(tmp_path, {"codec": "qsgd", "options": {"levels": 4}})
    fed = s.data["manufacturer"]["federation"]
    assert fed["aggregation"] == "weighted_mean" and fed["publish_every_rounds"] == 1 and fed["cohort"] == "fleet"
    assert type(s).from_json(s.to_json()).data == s.data


@pytest.fixture(scope="module")
def unit6():  # a tiny collective model's unit (N_conv = 6, 2-layer unit), as in test_device_round
    from common.channels import ChannelTask
    from common.learngene.collective import CollectiveConfig, train_collective

    cfg = CollectiveConfig(
        tasks=(ChannelTask.make("gbsm", 32, 8, 0, 3),), n_conv=6, samples_per_task=64, epochs_per_task=1, batch_size=32, unit_layers=2, val_samples=32, seed=3
    )
    return train_collective(cfg).unit


def test_device_rounds_close_the_loop(tmp_path: Path, unit6, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round 1 from v0, the base station publishes v1, round 2 trains from v1 (sent as a
    coded step, the device's own layers kept) and its update is Theta' - v1."""
    monkeypatch.setenv("AIRFLEET_CACHE_DIR", str(tmp_path / "cache"))
    s = _scenario(tmp_path, {"codec": "int8", "down_codec": "fp16"})
    bs = UnitUpdateBaseStation.from_scenario({"dev": s.classes[0]["unit_update"]}, s)
    p = device_profile(s, 0)
    bs.begin_round(1, unit6)
    ins = {UNIT_VERSION: unit6.meta["content_hash"], **bs.instructions(p)}
    r1 = run_device_round(s, p, 1, unit6.to_arrays(), dict(unit6.meta), {}, instructions=ins)
    assert r1.metrics["unit_update_bits"] == 8 * len(r1.payloads[UPDATE_KEY]) and r1.metrics["unit_update_bits_per_param"] < 10  # 8 bits + the frame
    bs.ingest(p, dict(r1.payloads), {})
    bs.end_round(1)
    v1 = bs.cohorts["fleet"].current
    assert v1.meta["parent"] == unit6.meta["content_hash"]
    bs.begin_round(2, unit6)
    ins = {UNIT_VERSION: unit6.meta["content_hash"], **bs.instructions(p)}
    assert ins[UNIT_VERSION] == v1.meta["content_hash"] and len(ins[DOWN_KEY]) == 1
    r2 = run_device_round(s, p, 2, None, None, r1.state, instructions=ins)
    assert r2.metrics["unit_update_down_bits"] == 8 * len(ins[DOWN_KEY][0])
    kept = {k[len("unit/"):]: v for k, v in r2.state.items() if k.startswith("unit/")}
    assert all(np.array_equal(kept[k], v1.tensors[k]) for k in v1.tensors)
    # the update it sent is its trained parameters minus v1 (int8: within the codec's bound)
    params = {k[len("model/"):]: v for k, v in r2.state.items() if k.startswith("model/")}
    names = unit_params("bottom-inherit", 6, 2)
    want = unit_update(params, v1.tensors, names)
    got = make_codec("int8").decode(r2.payloads[UPDATE_KEY])
    for k in want:
        step = (want[k].max() - want[k].min()) / 255
        np.testing.assert_allclose(got[k], want[k], rtol=0, atol=step * 0.51 + 1e-9)
    # without training, round 2's detector is round 1's with the unit layers swapped for v1's
    s0 = _scenario(tmp_path, {"codec": "int8", "down_codec": "fp16"}, epochs=0)
    r2b = run_device_round(s0, device_profile(s0, 0), 2, None, None, r1.state, instructions=ins)
    first = {k[len("model/"):]: v for k, v in r1.state.items() if k.startswith("model/")}
    second = {k[len("model/"):]: v for k, v in r2b.state.items() if k.startswith("model/")}
    inherited = {names[k]: k for k in names}
    for k, v in second.items():
        np.testing.assert_array_equal(v, v1.tensors[inherited[k]] if k in inherited else first[k], err_msg=k)
    # told a version it does not hold, the device refuses to train
    with pytest.raises(RuntimeError, match="told to train from unit"):
        run_device_round(s, p, 3, None, None, r1.state, instructions={UNIT_VERSION: v1.meta["content_hash"]})


_PLUGIN = '''
import numpy as np
from common.coding.registry import Body, Codec


class Bf16(Codec):
    """bfloat16 by truncation: a researcher's codec, outside airfleet."""

    name, lossless = "bf16", False

    def encode_body(self, tensors):
        flat = np.concatenate([t.ravel() for t in tensors]).astype("<f4")
        return Body(b"", (flat.view("<u4") >> 16).astype("<u2").tobytes(), 16.0 * flat.size)

    def decode_body(self, sizes, params, payload):
        v = (np.frombuffer(payload, dtype="<u2").astype("<u4") << 16).view("<f4").astype(np.float32)
        if v.size != sum(sizes):
            raise ValueError("bf16 payload does not match the sizes")
        return np.split(v, np.cumsum(sizes)[:-1])
'''


def test_a_plugin_codec_named_in_a_scenario_validates_and_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A package registering ``bf16`` under the ``airfleet.codecs`` entry point group (an
    installed distribution's metadata on sys.path) is named in [fleet.unit_update]."""
    site = tmp_path / "site"
    (site / "bf16_codec-0.1.dist-info").mkdir(parents=True)
    (site / "bf16_codec.py").write_text(_PLUGIN)
    (site / "bf16_codec-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: bf16-codec\nVersion: 0.1\n")
    (site / "bf16_codec-0.1.dist-info" / "entry_points.txt").write_text("[airfleet.codecs]\nbf16 = bf16_codec:Bf16\n")
    monkeypatch.syspath_prepend(str(site))
    s = _scenario(tmp_path, {"codec": "bf16", "down_codec": "bf16"})
    assert s.classes[0]["unit_update"]["codec"] == "bf16"
    unit = _unit()
    bs = UnitUpdateBaseStation.from_scenario({"dev": s.classes[0]["unit_update"]}, s)
    bs.begin_round(1, unit)
    up = _updates(unit, 1)[0]
    data = make_codec("bf16").encode(up).data
    assert len(data) < 4 * unit.n_params  # 16 bits a parameter and the frame
    bs.ingest(_dev(0, "dev"), {UPDATE_KEY: data}, {})
    bs.end_round(1)
    got, _ = UnitUpdateDevice().receive_unit(unit, bs.instructions(_dev(1, "dev")), s.classes[0]["unit_update"])
    assert got.meta["content_hash"] == bs.cohorts["fleet"].current.meta["content_hash"]
    for k, base in unit.tensors.items():  # bf16 keeps 8 significant bits of the step
        np.testing.assert_allclose(got.tensors[k] - base, up[k], rtol=2**-7, atol=1e-8)


@pytest.mark.parametrize("rule", ["weighted_mean", "fedmedian", "fedadam", "fedavgm"])
def test_checkpoint_restore_continues_as_if_never_stopped(rule: str) -> None:
    """Issue #22: the base station's federation state survives a resume: a restored stage
    gives the same instructions and publishes the same next version as the original
    (FedAdam's moments and FedAvgM's momentum included: version 2 depends on them)."""
    unit = _unit()
    classes = {"a": _cfg("topk", "int8", fraction=0.3), "b": _cfg("fp16")}
    ups = _updates(unit, 5)

    def run_rounds(bs: UnitUpdateBaseStation, rounds: range) -> list[dict]:
        rows = []
        for rnd in rounds:
            bs.begin_round(rnd, unit)
            for i, (did, cls) in enumerate(((0, "a"), (1, "b"))):
                codec = make_codec(classes[cls]["codec"], **classes[cls]["options"])
                bs.ingest(_dev(did, cls), {UPDATE_KEY: codec.encode(ups[(rnd + i) % 5]).data}, {})
            rows += bs.end_round(rnd).get(UNIT_VERSIONS_TABLE, [])
        return rows

    fed = dict(cohort="class", aggregation=rule, publish_every_rounds=2)
    if rule == "fedavgm":  # Flower's FedAvgM keeps momentum only when it has some
        fed["options"] = {"server_momentum": 0.9}
    whole = _bs(classes, {"a": 1.0, "b": 2.0}, **fed)
    rows_whole = run_rounds(whole, range(1, 6))
    first = _bs(classes, {"a": 1.0, "b": 2.0}, **fed)
    rows = run_rounds(first, range(1, 4))  # round 3 leaves an open window: one round aggregated, not published
    saved = {k: np.array(v) for k, v in first.checkpoint().items()}
    if rule in ("fedadam", "fedavgm"):  # the server optimizer's state is in the checkpoint
        assert any("/rule/" in k for k in saved)
    resumed = _bs(classes, {"a": 1.0, "b": 2.0}, **fed)
    resumed.restore(saved)
    for did, cls in ((0, "a"), (1, "b"), (7, "a")):
        assert resumed.instructions(_dev(did, cls)) == first.instructions(_dev(did, cls))
    rows += run_rounds(resumed, range(4, 6))
    assert rows == rows_whole
    for name, co in whole.cohorts.items():
        assert [v.meta["content_hash"] for v in co.versions] == [v.meta["content_hash"] for v in resumed.cohorts[name].versions]


@pytest.mark.parametrize(
    "rule, options, every",
    [
        ("fedadam", {}, 1),  # Flower's defaults: eta 0.1, beta_1 0.9, beta_2 0.99, tau 1e-3
        ("fedadam", {"eta": 0.05, "beta_1": 0.5, "beta_2": 0.9, "tau": 1e-2}, 2),
        ("fedavgm", {"server_momentum": 0.9, "server_learning_rate": 0.5}, 1),
        ("fedavgm", {"server_momentum": 0.5}, 2),
    ],
)
def test_server_optimizers_equal_their_formulas_over_versions(rule: str, options: dict, every: int) -> None:
    """FedAdam's and FedAvgM's server state carries over publications: each published
    version equals an oracle written out here in float64 from the papers' formulas, with
    Flower 1.41's conventions (``flwr.serverapp.strategy``), over four versions.

    Delta_t is the sample-weighted mean of the window's updates (two classes, weights 100
    and 300; fp32 up and down, so the decoded updates are the sent ones). FedAdam (Reddi
    et al. 2021, Alg. 2): m = b1 m + (1-b1) Delta, v = b2 v + (1-b2) Delta^2,
    x += eta_t m / (sqrt(v) + tau), where Flower scales eta by Adam's bias correction
    eta_t = eta sqrt(1 - b2^(t+1)) / (1 - b1^(t+1)) with t the publication index from 1
    (Flower's ``server_round``). FedAvgM (Hsu et al. 2019; Flower: PyTorch's SGD momentum
    on the pseudo-gradient -Delta): v = beta v + Delta (v_1 = Delta_1), x += lr v."""
    unit = _unit()
    classes = {"a": _cfg(), "b": _cfg()}
    weights = {"a": 100.0, "b": 300.0}
    bs = _bs(classes, weights, aggregation=rule, options=options, publish_every_rounds=every)
    g = np.random.default_rng(11)
    x = {k: v.astype(np.float64) for k, v in unit.tensors.items()}
    m = {k: np.zeros_like(v) for k, v in x.items()}
    v2 = {k: np.zeros_like(v) for k, v in x.items()}
    b1, b2, eta, tau = (options.get(k, d) for k, d in (("beta_1", 0.9), ("beta_2", 0.99), ("eta", 0.1), ("tau", 1e-3)))
    beta, lr = options.get("server_momentum", 0.0), options.get("server_learning_rate", 1.0)
    window: list[tuple[float, dict[str, np.ndarray]]] = []
    t = 0
    for rnd in range(1, 4 * every + 1):
        bs.begin_round(rnd, unit)
        for did, cls in enumerate(("a", "a", "b", "b", "b")[: 3 + rnd % 3]):  # 3 to 5 updates a round
            up = {k: g.normal(0.002 * (-1) ** rnd, 1e-2, a.shape).astype(np.float32) for k, a in unit.tensors.items()}
            bs.ingest(_dev(did, cls), {UPDATE_KEY: make_codec("fp32").encode(up).data}, {})
            window.append((weights[cls], up))
        bs.end_round(rnd)
        if rnd % every:
            continue
        t += 1
        w = np.array([wi for wi, _ in window])
        delta = {k: sum(wi * u[k].astype(np.float64) for wi, u in window) / w.sum() for k in x}
        window = []
        for k in x:
            if rule == "fedadam":
                m[k] = b1 * m[k] + (1 - b1) * delta[k]
                v2[k] = b2 * v2[k] + (1 - b2) * delta[k] ** 2
                step = eta * np.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1)) * m[k] / (np.sqrt(v2[k]) + tau)
                fresh = eta * np.sqrt(1 - b2 ** (t + 1)) / (1 - b1 ** (t + 1)) * (1 - b1) * delta[k] / (np.sqrt(1 - b2) * np.abs(delta[k]) + tau)
            else:
                m[k] = beta * m[k] + delta[k]
                step, fresh = lr * m[k], lr * delta[k]
            if t > 1:  # the server state matters: a rule that forgot it would be far off
                assert np.abs(step - fresh).max() > 1e-4
            x[k] = x[k] + step
        co = bs.cohorts["fleet"]
        assert len(co.versions) == t + 1
        for k in x:
            np.testing.assert_allclose(co.current.tensors[k], x[k], rtol=0, atol=1e-6, err_msg=f"version {t}, {k}")


def test_a_late_device_is_sent_only_the_steps_it_lacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Device 1's replies come late (``round_deadline_s``) in rounds 1 and 2: its updates
    are not aggregated, but each reply shows it completed its round from the instructed
    version (the device refuses any other), so the server's pricing step
    (``FleetServer._take_reply``) acknowledges it and the next round sends it one step,
    the same bytes as on-time device 0, not the chain from v0 again. The oracle is what
    the devices (``receive_unit``) actually apply and the bytes each is sent."""
    from server.app import FleetServer, _Device

    monkeypatch.setenv("AIRFLEET_CACHE_DIR", str(tmp_path / "cache"))
    s = _scenario(tmp_path, {"codec": "fp16", "down_codec": "int8"})
    srv = FleetServer(None, s, tmp_path / "run", quiet=True)  # type: ignore[arg-type]
    srv.devices = {d: _Device(device_profile(s, d), 100 + d) for d in range(2)}
    bs, cfg, unit = srv.stages["unit_update"], s.classes[0]["unit_update"], _unit()
    holds = {0: unit, 1: unit}  # what each device holds (the device side)
    steps_sent: dict[int, list[int]] = {0: [], 1: []}
    bytes_sent: dict[int, list[int]] = {0: [], 1: []}
    reply = SimpleNamespace(content=SimpleNamespace(array_records={}))  # what _ingest reads of a Message
    ups = _updates(unit, 6)
    for rnd in (1, 2, 3):
        bs.begin_round(rnd, unit)
        told = {d: {UNIT_VERSION: unit.meta["content_hash"], **bs.instructions(srv.devices[d].profile)} for d in (0, 1)}
        rows = {}
        for d, ins in told.items():
            steps = ins.get(DOWN_KEY, [])
            steps_sent[d].append(len(steps))
            bytes_sent[d].append(sum(len(x) for x in steps))
            holds[d], _ = UnitUpdateDevice().receive_unit(holds[d], ins, cfg)
            assert holds[d].meta["content_hash"] == ins[UNIT_VERSION]  # what the device checks before training
            data = make_codec("fp16").encode(ups[2 * rnd - 2 + d]).data
            rows[d] = {"status": "late" if d == 1 and rnd < 3 else "ok", "metrics": {}, "_reply": (reply, {UPDATE_KEY: data})}
        for d, row in rows.items():
            srv._take_reply(d, row, told[d])
            assert "_reply" not in row and row["status"] in ("ok", "late")
        bs.end_round(rnd)
    co = bs.cohorts["fleet"]
    assert len(co.versions) == 4
    assert steps_sent == {0: [0, 1, 1], 1: [0, 1, 1]}  # without the acknowledgement: [0, 1, 2]
    assert bytes_sent[1] == bytes_sent[0] == [0, len(co.steps[1]), len(co.steps[2])]
    # the late updates were not aggregated: v1 is device 0's round-1 update alone (int8 down)
    v1_step = {k: co.versions[1].tensors[k] - unit.tensors[k] for k in unit.tensors}
    for k, u in ups[0].items():
        np.testing.assert_allclose(v1_step[k], u, rtol=0, atol=(u.max() - u.min()) / 255 * 0.51 + 2e-5)  # int8 down, fp16 up
    # a late reply without the stage's payload (the device did not run the stage) or naming
    # a version the cohort never had tells nothing
    p1 = srv.devices[1].profile
    before = dict(bs.held)
    bs.acknowledge(p1, {UNIT_VERSION: co.current.meta["content_hash"]}, {})
    bs.acknowledge(p1, {UNIT_VERSION: "f" * 64}, {UPDATE_KEY: b"x"})
    assert bs.held == before
