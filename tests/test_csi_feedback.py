"""CSI feedback end to end (tiny sizes): device stage -> base station, bit-exact decoders, fuzz."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.stages.csi_feedback import CsiFeedbackDevice
from common.channels import ChannelTask
from common.coding import BitstreamError
from common.csi import (
    GENIE_KEY,
    LATENT_KEY,
    STAGE_SCHEMA,
    TRUTH_KEY,
    UPDATE_KEY,
    FeedbackServer,
    pretrained_compressor,
    resolve_cfg,
)
from common.csi import pretrain as csi_pretrain
from common.models.csi_compressor import CSICompressor, CompressorConfig, csi_to_planes
from common.phy.metrics import nmse_db
from common.schema import ScenarioError
from common.stage import DeviceContext, StageResult



def _cfg(tmp: Path, **kw: object) -> dict:
    base = dict(
        n_ant=8, n_sc=8, width=4, kernel=3, lmbda=64.0,
        pretrain_samples=48, pretrain_tasks=1, pretrain_steps=6, pretrain_batch=16,
        n_finetune=16, n_eval=8, steps=4, batch=8, lr=2e-2, decoder_lr=0.0, t=5e-3, n_bins=64,
        cache_dir=str(tmp),
    )  # decoder_lr 0: the decoder takes lr's step too, so four steps give a real update
    base.update(kw)
    return base


def run_stage(ctx: DeviceContext, cfg: dict) -> StageResult:
    """The device half as the fleet runs it (``clients.stages``)."""
    return CsiFeedbackDevice().run_device(ctx, cfg)


def _ctx(device_id: int, rnd: int, state: dict | None = None) -> DeviceContext:
    return DeviceContext(
        device_id=device_id, device_class="phone", round=rnd, seed=1000 + 10 * device_id + rnd,
        task=ChannelTask.make("gbsm", 8, 1, task_id=device_id, seed=5), snr_db=10.0, state=state or {},
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("csi_cache")


def _dec_state(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k[len("dec."):]: v for k, v in state.items() if k.startswith("dec.")}


def test_schema_rejects_bad_values(cache: Path) -> None:
    assert resolve_cfg({})["scheme"] == "fm"
    with pytest.raises(ScenarioError, match="scheme"):
        resolve_cfg({"scheme": "bogus"})
    with pytest.raises(ScenarioError, match="prior"):
        resolve_cfg({"prior": "laplace"})
    with pytest.raises(ValueError, match="multiples of 4"):
        resolve_cfg({"n_ant": 6})
    assert {"scheme", "lmbda", "t", "sigma", "alpha", "steps", "lr", "prior", "regularize_update", "n_finetune"} <= set(STAGE_SCHEMA)


def test_pretraining_is_deterministic_and_cached(cache: Path) -> None:
    cfg = _cfg(cache)
    a = pretrained_compressor(cfg)
    files = list(cache.glob("csi-*.npz"))
    assert len(files) == 1
    csi_pretrain._MEMO.clear()
    b = pretrained_compressor(cfg)  # from disk
    for x, y in zip(a.state_dict().values(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    csi_pretrain._MEMO.clear()
    files[0].unlink()
    c = pretrained_compressor(cfg)  # retrained from scratch: same numbers
    for x, y in zip(a.state_dict().values(), c.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    assert a.decoder_tag() == c.decoder_tag()
    # pre-training moved the weights away from the initialisation
    init = CSICompressor(a.cfg)
    assert any(not torch.equal(p, q) for p, q in zip(a.state_dict().values(), init.state_dict().values()))


def test_compress_decompress_reports_actual_and_estimated_bits(cache: Path) -> None:
    m = pretrained_compressor(_cfg(cache))
    H = torch.randn(5, 8, 8, dtype=torch.complex64)
    data = m.compress(H)
    est = m.estimated_bits(H)
    y = m.quantized_latents(H)
    H_hat = m.decompress(data)
    torch.testing.assert_close(H_hat, m.decode_latents(y))
    assert 8 * len(data) <= est * 1.01 + 64 + 8 * 36  # payload bound + fixed framing header
    assert nmse_db(H, H, reduction="mean") == -np.inf


@pytest.mark.parametrize("scheme", ["fm", "eo", "ga", "none"])
def test_server_decoder_equals_device_decoder_bit_for_bit(cache: Path, scheme: str) -> None:
    cfg = _cfg(cache, scheme=scheme)
    srv = FeedbackServer({"phone": cfg}, seed=0)
    state: dict[str, np.ndarray] = {}
    for rnd in (1, 2):
        res = run_stage(_ctx(3, rnd, state), cfg)
        assert set(res.payloads) == {UPDATE_KEY, LATENT_KEY}
        assert res.side[TRUTH_KEY].dtype == np.float32 and res.side[TRUTH_KEY].shape == (8, 2, 8, 8)
        out = srv.ingest(3, "phone", res.payloads, res.side)
        state = res.state
        dev = _dec_state(state)
        bs = srv.decoder_state(3)
        assert list(bs) == list(dev)
        for k in dev:
            assert bs[k].dtype == np.float32 and bs[k].tobytes() == dev[k].tobytes(), k
        assert out["nmse_db"] == pytest.approx(res.metrics["nmse_db_device"], abs=1e-9)
        assert out["latent_bits"] == 8 * len(res.payloads[LATENT_KEY]) == res.metrics["latent_bits_actual"]
        assert out["update_bits"] == 8 * len(res.payloads[UPDATE_KEY]) == res.metrics["update_bits_actual"]
        assert out["bits_per_dim_total"] == pytest.approx((out["latent_bits"] + out["update_bits"]) / (8 * 64))
    if scheme in ("eo", "none"):
        assert res.payloads[UPDATE_KEY] == b""
        base = pretrained_compressor(cfg).decoder_arrays()
        assert all(a.tobytes() == b.tobytes() for a, b in zip(base, srv.decoder_state(3).values()))
    if scheme == "fm":
        assert res.metrics["update_bits_estimated"] > 0
        assert res.metrics["update_bits_actual"] <= res.metrics["update_bits_estimated"] * 1.01 + 64 + 8 * 44
    if scheme == "ga":
        assert GENIE_KEY in res.side and res.metrics["update_bits_actual"] == 0


def _mutations(data: bytes, rng: np.random.Generator) -> list[bytes]:
    out = [b"", data[:1], data[:7], data[: len(data) // 2], data[:-1], data + b"\x00", b"\x00" * len(data)]
    for _ in range(12):
        b = bytearray(data)
        pos = int(rng.integers(0, len(b)))
        b[pos] ^= 1 << int(rng.integers(0, 8))
        out.append(bytes(b))
    # forged headers with a valid CRC: huge counts, other sizes
    for off, fmt, val in [(8, "<I", 0xFFFFFFFF), (12, "<H", 0xFFFF), (14, "<H", 1), (6, "<H", 0xFFFF)]:
        b = bytearray(data)
        struct.pack_into(fmt, b, off, val)
        body = bytes(b[:-4])
        out.append(body + struct.pack("<I", zlib.crc32(body)))
    # payload word count forged to a huge value, CRC fixed
    b = bytearray(data)
    flen = struct.unpack_from("<H", b, 6)[0]
    struct.pack_into("<I", b, 8 + flen, 0x7FFFFFFF)
    body = bytes(b[:-4])
    out.append(body + struct.pack("<I", zlib.crc32(body)))
    out.append(bytes(rng.integers(0, 256, size=len(data), dtype=np.uint8)))
    return out


def _decoders(srv: FeedbackServer, device_id: int) -> dict[str, bytes]:
    return {k: v.tobytes() for k, v in srv.decoder_state(device_id).items()}


def _two_fm_rounds(cache: Path, device_id: int) -> tuple[FeedbackServer, StageResult, StageResult, dict[str, bytes]]:
    """A device's first two ``fm`` rounds, the first one ingested: the server, both
    results and the decoder the server holds (bytes) before the second uplink."""
    cfg = _cfg(cache, scheme="fm")
    srv = FeedbackServer({"phone": cfg}, seed=0)
    r1 = run_stage(_ctx(device_id, 1), cfg)
    srv.ingest(device_id, "phone", r1.payloads, r1.side)
    r2 = run_stage(_ctx(device_id, 2, r1.state), cfg)
    assert r2.metrics["update_nonzero"] > 0  # a real update, which would change the stored decoder
    return srv, r1, r2, _decoders(srv, device_id)


def test_corrupted_stream_fuzz_never_crashes_or_changes_state(cache: Path) -> None:
    srv, _, r2, before = _two_fm_rounds(cache, 1)
    rng = np.random.default_rng(0)
    n_rejected = 0
    for key in (UPDATE_KEY, LATENT_KEY):
        for i, bad in enumerate(_mutations(r2.payloads[key], rng)):
            payloads = dict(r2.payloads)
            payloads[key] = bad
            if bad == r2.payloads[key] or (key == UPDATE_KEY and bad == b""):
                continue  # "no update" is legal; the latents then name another decoder (covered below)
            try:
                srv.ingest(1, "phone", payloads, r2.side)
            except BitstreamError:
                pass
            else:
                pytest.fail(f"mutation {i} of {key} ({len(bad)} of {len(r2.payloads[key])} bytes) was accepted")
            n_rejected += 1
            assert _decoders(srv, 1) == before
        # a fresh device never gets state from a rejected stream
        with pytest.raises(BitstreamError):
            srv.ingest(2, "phone", {UPDATE_KEY: r2.payloads[UPDATE_KEY][:-3], LATENT_KEY: r2.payloads[LATENT_KEY]}, r2.side)
        with pytest.raises(KeyError):
            srv.decoder_state(2)
    assert n_rejected > 40
    # the update alone, latents dropped, or an update against another decoder: rejected too
    with pytest.raises(BitstreamError, match="csi_latents"):
        srv.ingest(1, "phone", {UPDATE_KEY: r2.payloads[UPDATE_KEY]}, r2.side)
    with pytest.raises(BitstreamError, match="decoder"):
        srv.ingest(1, "phone", {UPDATE_KEY: b"", LATENT_KEY: r2.payloads[LATENT_KEY]}, r2.side)
    with pytest.raises(BitstreamError, match="csi_truth"):
        srv.ingest(1, "phone", r2.payloads, {TRUTH_KEY: r2.side[TRUTH_KEY][:3]})
    assert _decoders(srv, 1) == before
    # the genuine stream still goes through afterwards
    out = srv.ingest(1, "phone", r2.payloads, r2.side)
    assert out["nmse_db"] == pytest.approx(r2.metrics["nmse_db_device"], abs=1e-9)
    assert any(v.tobytes() != before[k] for k, v in srv.decoder_state(1).items())


def test_truth_planes_are_the_evaluation_csi(cache: Path) -> None:
    cfg = _cfg(cache, scheme="none")
    res = run_stage(_ctx(4, 1), cfg)
    m = pretrained_compressor(cfg)
    H = torch.complex(torch.from_numpy(res.side[TRUTH_KEY][:, 0]), torch.from_numpy(res.side[TRUTH_KEY][:, 1]))
    torch.testing.assert_close(csi_to_planes(H).numpy(), res.side[TRUTH_KEY])
    assert res.metrics["nmse_db_device"] == pytest.approx(nmse_db(m.decompress(res.payloads[LATENT_KEY]), H, reduction="mean"), abs=1e-9)
    assert CompressorConfig(8, 8).latent_shape == (2, 2, 2)


def test_scaling_the_latents_keeps_the_continuous_autoencoder() -> None:
    for dense in (True, False):
        m = CSICompressor(CompressorConfig(n_ant=8, n_sc=8, width=4, dense_latent=dense), seed=1)
        x = torch.randn(3, 2, 8, 8)
        with torch.no_grad():
            y0, out0 = m.encoder(x), m.decoder(m.encoder(x))
            m.scale_latents(7.5)
            y1, out1 = m.encoder(x), m.decoder(m.encoder(x))
        torch.testing.assert_close(y1, 7.5 * y0, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out1, out0, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError):
        m.scale_latents(0.0)


def _reframe(frame: bytes, words: np.ndarray) -> bytes:
    """``frame``'s header with other payload words, their count and a recomputed CRC."""
    flen = struct.unpack_from("<H", frame, 6)[0]
    body = frame[: 8 + flen] + struct.pack("<I", words.size) + np.asarray(words, dtype="<u4").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def test_forged_latent_words_and_non_finite_truth_leave_the_decoders_unchanged(cache: Path) -> None:
    srv, r1, r2, before = _two_fm_rounds(cache, 5)
    frame = r2.payloads[LATENT_KEY]
    flen = struct.unpack_from("<H", frame, 6)[0]
    (n_words,) = struct.unpack_from("<I", frame, 8 + flen)
    words = np.frombuffer(frame, dtype="<u4", count=n_words, offset=12 + flen).astype(np.uint32)
    assert _reframe(frame, words) == frame
    replaced = words.copy()
    replaced[n_words // 2] = ~replaced[n_words // 2]
    forged = {
        "words appended": _reframe(frame, np.concatenate([words, words[:3]])),
        "words replaced": _reframe(frame, replaced),
    }
    for what, data in forged.items():
        with pytest.raises(BitstreamError, match=what):
            srv.ingest(5, "phone", {**r2.payloads, LATENT_KEY: data}, r2.side)
        assert _decoders(srv, 5) == before
    for bad in (np.nan, np.inf, -np.inf):
        truth = r2.side[TRUTH_KEY].copy()
        truth[1, 0, 2, 3] = bad
        with pytest.raises(BitstreamError, match="csi_truth must be finite"):
            srv.ingest(5, "phone", r2.payloads, {**r2.side, TRUTH_KEY: truth})
        assert _decoders(srv, 5) == before
    # a device's first uplink, refused for its truth alone, leaves no decoder behind
    truth = r1.side[TRUTH_KEY].copy()
    truth[0, 1, 0, 0] = np.nan
    with pytest.raises(BitstreamError, match="finite"):
        srv.ingest(6, "phone", r1.payloads, {**r1.side, TRUTH_KEY: truth})
    with pytest.raises(KeyError):
        srv.decoder_state(6)
    # the genuine uplinks go through
    assert np.isfinite(srv.ingest(6, "phone", r1.payloads, r1.side)["nmse_db"])
    out = srv.ingest(5, "phone", r2.payloads, r2.side)
    assert out["nmse_db"] == pytest.approx(r2.metrics["nmse_db_device"], abs=1e-9)
    assert any(v.tobytes() != before[k] for k, v in srv.decoder_state(5).items())


@pytest.mark.parametrize(
    ("table", "message"),
    [({"n_ant": 6}, "multiples of 4"), ({"n_sc": 30}, "multiples of 4"), ({"kernel": 4}, "odd")],
)
def test_a_table_the_compressor_cannot_take_fails_at_scenario_validation(table: dict, message: str) -> None:
    # the error names the exact key inside the stage table (issue #22), not just the table
    from common.scenario import parse_scenario

    raw = {
        "name": "csi", "seed": 1, "rounds": 1, "channels": {"source": "gbsm"},
        "fleet": [{"name": "ue", "count": 1, "csi_feedback": table}],
    }
    with pytest.raises(ScenarioError, match=message) as e:
        parse_scenario(raw)
    assert e.value.key == f"fleet[0].csi_feedback.{next(iter(table))}"
    with pytest.raises(ScenarioError, match=message):
        resolve_cfg(table)
    parse_scenario({**raw, "fleet": [{"name": "ue", "count": 1, "csi_feedback": {"n_ant": 8, "kernel": 3}}]})


def test_nmse_reductions() -> None:
    ref = torch.zeros(2, 2, 2, dtype=torch.complex64)
    ref[0, 0, 0], ref[1, 0, 0] = 1.0, 2.0j
    est = ref.clone()
    est[0, 1, 1] = 0.1  # sample 0: error 0.01 / energy 1
    est[1, 0, 0] += 0.6  # sample 1: error 0.36 / energy 4
    # eq. (11): the mean of the per-sample ratios; "sum": total error over total energy
    assert nmse_db(est, ref, reduction="mean") == pytest.approx(10 * np.log10((0.01 + 0.09) / 2), abs=1e-5)
    assert nmse_db(est, ref, reduction="sum") == pytest.approx(10 * np.log10(0.37 / 5), abs=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        nmse_db(est, ref, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shapes"):
        nmse_db(est[:1], ref, reduction="mean")
