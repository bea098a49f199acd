"""The codec registry: round trips, stated error bounds, bits against each codec's ideal,
error feedback over rounds, and untrusted bytes (truncated, flipped, garbage, forged)."""

from __future__ import annotations

import math
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.coding.bitstream import FRAME_OVERHEAD_BYTES, BitstreamError
from common.coding.registry import Codec, available_codecs, check_codec_name, make_codec
from common.coding.spike_slab import UpdateQuantizer, make_prior
from common.coding.update_codec import pack_update

NNC = "nnc" in available_codecs()  # only where NNCodec's DeepCABAC core is installed
BUILTIN = ("fp32", "fp16", "int8", "int4", "qsgd", "topk", "sign", "spike_slab") + (("nnc",) if NNC else ())
LOSSY_BOUNDED = ("fp16", "int8", "int4", "qsgd", "spike_slab") + (("nnc",) if NNC else ())


def _update(seed: int = 0, scale: float = 1e-2) -> dict[str, np.ndarray]:
    """A stand-in update shaped like a 4-layer learngene unit (conv 16x16x3x3 + bias)."""
    rng = np.random.default_rng(seed)
    out = {}
    for m in range(4):
        out[f"{m}.weight"] = (rng.standard_t(3, size=(16, 16, 3, 3)) * scale).astype(np.float32)
        out[f"{m}.bias"] = (rng.normal(size=16) * scale).astype(np.float32)
    return out


def _n(arrays: dict[str, np.ndarray]) -> int:
    return sum(a.size for a in arrays.values())


def test_registry_names_and_errors():
    assert set(BUILTIN) <= set(available_codecs())
    with pytest.raises(ValueError, match="available: fp32, fp16"):
        make_codec("fp64")
    with pytest.raises(ValueError, match="does not take options"):
        make_codec("fp16", fraction=0.1)
    with pytest.raises(ValueError, match="fraction"):
        make_codec("topk", fraction=0.0)
    assert check_codec_name("int4") == "int4"
    with pytest.raises(ValueError, match="unknown codec"):
        check_codec_name("int3")
    if "nnc" not in available_codecs():
        with pytest.raises(ValueError, match="nnc") as e:
            make_codec("nnc")
        assert "\n" not in str(e.value)


def test_fp32_is_bit_exact_on_awkward_values():
    x = np.array([0.0, -0.0, 1e-45, -1e-45, 3.4028235e38, -3.4028235e38, 1.0 + 2**-23, np.pi], dtype=np.float32)
    codec = make_codec("fp32")
    d = codec.decode(codec.encode({"x": x, "y": x[::-1].reshape(2, 4)}).data)
    assert d["x"].tobytes() == x.tobytes() and d["y"].tobytes() == x[::-1].reshape(2, 4).tobytes()
    assert list(d) == ["x", "y"] and d["y"].shape == (2, 4)


def test_spike_slab_is_bit_exact_on_its_grid_and_wraps_the_csi_coder():
    t, n_bins = 1e-3, 256
    rng = np.random.default_rng(3)
    k = rng.integers(-128, 128, size=500).astype(np.int32) * (rng.random(500) < 0.2)
    on_grid = {"a": (np.float32(t) * k[:300].astype(np.float32)).reshape(30, 10), "b": np.float32(t) * k[300:].astype(np.float32)}
    codec = make_codec("spike_slab", step=t, n_bins=n_bins, sigma=5e-2, alpha=1000.0)
    enc = codec.encode(on_grid)
    d = codec.decode(enc.data)
    assert all(d[key].tobytes() == on_grid[key].tobytes() for key in on_grid)
    # the payload is the CSI stage's own update frame, byte for byte
    prior = make_prior("spike_slab", UpdateQuantizer(t, n_bins), 5e-2, 1000.0)
    csi = pack_update(k.astype(np.int32), prior, 0)
    start = enc.overhead_bytes - 4  # the frame's CRC ends it
    assert enc.data[start : start + len(csi)] == csi


def test_the_csi_stage_update_is_selectable_through_the_registry():
    """``common.csi.config.update_codec``: the registry codec of a csi_feedback table codes
    an update into exactly the frame the stage sends, bound to the same decoder tag."""
    from common.csi.config import make_prior_from_cfg, resolve_cfg, update_codec

    cfg = resolve_cfg({"t": 2e-3, "n_bins": 64, "alpha": 300.0})
    rng = np.random.default_rng(8)
    k = (rng.integers(-32, 32, size=(2, 400)) * (rng.random((2, 400)) < 0.1)).astype(np.int32)
    t32 = np.float32(cfg["t"])
    arrays = {"dec.0": t32 * k[0].astype(np.float32), "dec.1": (t32 * k[1].astype(np.float32)).reshape(20, 20)}
    codec = update_codec(cfg, base_tag=0xDEADBEEF)
    enc = codec.encode(arrays)
    csi = pack_update(k.ravel(), make_prior_from_cfg(cfg), 0xDEADBEEF)
    start = enc.overhead_bytes - 4
    assert enc.data[start : start + len(csi)] == csi and len(enc.data) == start + len(csi) + 4
    assert all(codec.decode(enc.data)[n].tobytes() == arrays[n].tobytes() for n in arrays)
    with pytest.raises(BitstreamError, match="against decoder"):
        update_codec(cfg, base_tag=1).decode(enc.data)


@pytest.mark.parametrize("name", LOSSY_BOUNDED)
@pytest.mark.parametrize("scale", [1e-4, 1e-2, 3.0])
def test_lossy_codecs_stay_within_their_stated_bound(name: str, scale: float):
    options = {"spike_slab": {"step": scale / 4}, "nnc": {"qp": round(4 * math.log2(scale)) - 20, "dq": False}}
    codec = make_codec(name, **options.get(name, {}))
    for seed in range(3):
        arrays = _update(seed, scale)
        arrays["const"] = np.full(5, scale, np.float32)  # a tensor with hi == lo
        bound = codec.error_bound(arrays)
        d = codec.decode(codec.encode(arrays).data)
        err = max(float(np.abs(d[k].astype(np.float64) - arrays[k]).max()) for k in arrays)
        assert bound is not None and err <= bound, (name, seed, err, bound)
        assert err > 0 or name == "spike_slab"


def test_spike_slab_bound_covers_the_clip_range():
    codec = make_codec("spike_slab", step=1e-3, n_bins=16)
    arrays = {"x": np.array([-1.0, 0.0, 0.2], np.float32)}
    d = codec.decode(codec.encode(arrays).data)
    err = float(np.abs(d["x"] - arrays["x"]).max())
    assert err <= codec.error_bound(arrays) and err > 0.9  # clipped at t * k_min = -0.008


@pytest.mark.parametrize("name", ["topk", "sign"])
def test_error_feedback_residual_carries_over_rounds(name: str):
    codec = make_codec(name, **({"fraction": 0.05} if name == "topk" else {}))
    assert codec.stateful
    total_in = {k: np.zeros_like(v, dtype=np.float64) for k, v in _update(0).items()}
    total_out = {k: np.zeros_like(v, dtype=np.float64) for k in total_in for v in [total_in[k]]}
    residual = None
    for r in range(6):
        x = _update(100 + r)
        enc = codec.encode(x, residual)
        dec = codec.decode(enc.data)
        for k in x:
            total_in[k] += x[k]
            total_out[k] += dec[k]
        residual = enc.residual
        assert set(residual) == set(x) and all(residual[k].shape == x[k].shape for k in x)
    for k in total_in:
        np.testing.assert_allclose(total_out[k] + residual[k], total_in[k], rtol=0, atol=1e-5)
    # the residual is real state: the same round without it decodes to something else
    fresh = codec.decode(codec.encode(_update(105)).data)
    assert any(not np.array_equal(fresh[k], dec[k]) for k in dec)


def test_topk_sends_the_largest_and_codes_positions_compactly():
    x = {"w": np.random.default_rng(1).normal(size=20000).astype(np.float32)}
    codec = make_codec("topk", fraction=0.01)
    enc = codec.encode(x)
    d = codec.decode(enc.data)["w"]
    k = 200
    assert np.count_nonzero(d) == k
    thresh = np.sort(np.abs(x["w"]))[-k]
    assert np.all(np.abs(x["w"][d != 0]) >= thresh)
    index_bits = 8 * (len(enc.data) - enc.overhead_bytes) - 32 * k
    assert index_bits < 10 * k  # log2 C(20000, 200) / 200 = 8.1 bits an index, not 32


def test_topk_selection_matches_a_full_sort_with_ties_to_the_lowest_index():
    from common.coding.codecs import TopKCodec

    rng = np.random.default_rng(11)
    for _ in range(20):
        acc = rng.integers(-5, 6, size=int(rng.integers(1, 300))).astype(np.float32)  # many ties
        k = int(rng.integers(0, acc.size + 1))
        oracle = np.sort(np.argsort(-np.abs(acc), kind="stable")[:k])
        assert np.array_equal(TopKCodec.select(acc, k), oracle)


def test_qsgd_same_seed_same_bits_and_unbiased():
    x = {"w": np.random.default_rng(2).normal(size=64).astype(np.float32)}
    a, b = make_codec("qsgd", levels=4, seed=7), make_codec("qsgd", levels=4, seed=8)
    assert a.encode(x).data == make_codec("qsgd", levels=4, seed=7).encode(x).data
    assert a.encode(x).data != b.encode(x).data
    mean = np.mean([make_codec("qsgd", levels=4, seed=s).decode(make_codec("qsgd", levels=4, seed=s).encode(x).data)["w"] for s in range(400)], axis=0)
    step = np.linalg.norm(x["w"]) / 4
    assert np.abs(mean - x["w"]).max() < 4 * step / math.sqrt(400)  # each draw is within one step


def _payload_bits(enc) -> int:  # noqa: ANN001
    return 8 * (len(enc.data) - enc.overhead_bytes)


@pytest.mark.parametrize(
    ("name", "options", "side_bits"),
    [
        ("fp32", {}, 0),
        ("fp16", {}, 0),
        ("int8", {}, 0),
        ("int4", {}, 8),  # the last half byte
        ("sign", {}, 8),  # the last bits of a byte
        ("qsgd", {"levels": 16}, 8 * 3 * 33),  # histogram: 33 counts < 2**21, 3 bytes each at most
        ("topk", {"fraction": 0.02}, 0),
        ("spike_slab", {"step": 2e-3}, 8 * (FRAME_OVERHEAD_BYTES + 28)),  # the CSI coder's own frame
    ],
)
def test_coded_bits_are_within_the_stated_bound_of_the_ideal(name: str, options: dict, side_bits: int):
    """Range-coded payloads: at most 1 % + 64 bits (coder flush) above the ideal, plus the
    side information; fixed-length ones: the ideal, padded to whole 32-bit words. And never
    below the ideal by more than a word (the ideal is not inflated)."""
    rng = np.random.default_rng(5)
    x = {"w": (rng.standard_t(3, size=(100, 200)) * 1e-2).astype(np.float32), "b": rng.normal(size=200).astype(np.float32) * 1e-2}
    enc = make_codec(name, **options).encode(x)
    bits = _payload_bits(enc)
    assert bits <= 1.01 * enc.ideal_bits + 64 + side_bits + 31, (bits, enc.ideal_bits)
    assert bits >= enc.ideal_bits - 32, (bits, enc.ideal_bits)


# --- untrusted bytes -----------------------------------------------------------------------

_FUZZ_MAX_PARAMS = 1 << 12


def _fuzz_codec(name: str) -> Codec:
    return make_codec(name, max_params=_FUZZ_MAX_PARAMS)


def _valid_stream(name: str) -> bytes:
    x = {"w": (np.random.default_rng(9).normal(size=(12, 10)) * 1e-2).astype(np.float32), "b": np.full(3, 1e-3, np.float32)}
    return _fuzz_codec(name).encode(x).data


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _decode_or_bitstream_error(codec: Codec, data: bytes) -> dict[str, np.ndarray] | None:
    tracemalloc.start()
    try:
        out = codec.decode(data)
    except BitstreamError:
        out = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 1 << 21, f"decode of {len(data)} bytes peaked at {peak} bytes"
    if out is not None:
        assert sum(v.size for v in out.values()) <= _FUZZ_MAX_PARAMS
        assert all(v.dtype == np.float32 and np.all(np.isfinite(v)) for v in out.values())
    return out


_fuzz = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", BUILTIN)
@_fuzz
@given(data=st.data())
def test_fuzz_truncated_flipped_garbage(name: str, data):  # noqa: ANN001
    codec, good = _fuzz_codec(name), _valid_stream(name)
    cut = data.draw(st.integers(0, len(good) - 1))
    with pytest.raises(BitstreamError):
        codec.decode(good[:cut])
    bit = data.draw(st.integers(0, 8 * len(good) - 1))
    flipped = bytearray(good)
    flipped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(BitstreamError):
        codec.decode(bytes(flipped))
    garbage = data.draw(st.binary(max_size=600))
    with pytest.raises(BitstreamError):
        codec.decode(garbage)


@pytest.mark.parametrize("name", BUILTIN)
@_fuzz
@given(data=st.data())
def test_fuzz_forged_streams_with_a_valid_crc(name: str, data):  # noqa: ANN001
    """A forger who recomputes the CRC: every byte may change; the decoder either refuses
    with BitstreamError or gives bounded, finite float32 arrays, never another exception."""
    codec, good = _fuzz_codec(name), _valid_stream(name)
    body = bytearray(good[:-4])
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(body) - 1))
        body[pos] = data.draw(st.integers(0, 255))
    _decode_or_bitstream_error(codec, _recrc(bytes(body)))
    # spliced: a valid prefix, forged tail, consistent CRC
    cut = data.draw(st.integers(8, len(body)))
    tail = data.draw(st.binary(max_size=64))
    _decode_or_bitstream_error(codec, _recrc(bytes(body[:cut]) + tail))


@pytest.mark.parametrize("name", BUILTIN)
def test_forged_sizes_are_refused_before_allocation(name: str):
    codec, good = _fuzz_codec(name), _valid_stream(name)
    fields_len = struct.unpack_from("<H", good, 6)[0]
    fields = bytearray(good[8 : 8 + fields_len])
    # declare 2**32 - 1 elements in the header and a huge first dimension in the table
    struct.pack_into("<I", fields, 20, 0xFFFFFFFF)
    forged = _recrc(good[:8] + bytes(fields) + good[8 + fields_len : -4])
    with pytest.raises(BitstreamError, match="elements"):
        _decode_or_bitstream_error(codec, forged) or codec.decode(forged)
    fields = bytearray(good[8 : 8 + fields_len])
    name_len = fields[30]
    struct.pack_into("<I", fields, 30 + 1 + name_len + 1, 1 << 30)
    forged = _recrc(good[:8] + bytes(fields) + good[8 + fields_len : -4])
    with pytest.raises(BitstreamError):
        _decode_or_bitstream_error(codec, forged) or codec.decode(forged)


@pytest.mark.parametrize("name", BUILTIN)
def test_a_stream_of_another_codec_or_option_is_refused(name: str):
    other = "fp16" if name == "fp32" else "fp32"
    with pytest.raises(BitstreamError, match="coded by"):
        make_codec(name).decode(make_codec(other).encode({"x": np.ones(4, np.float32)}).data)


@pytest.mark.parametrize(("name", "a", "b"), [("qsgd", {"levels": 4}, {"levels": 8}), ("topk", {"fraction": 0.1}, {"fraction": 0.2}), ("spike_slab", {"step": 1e-3}, {"step": 2e-3})])
def test_options_must_agree(name: str, a: dict, b: dict):
    data = make_codec(name, **a).encode({"x": np.linspace(-1, 1, 50, dtype=np.float32) * 1e-2}).data
    with pytest.raises(BitstreamError):
        make_codec(name, **b).decode(data)


def test_bad_input_is_one_clear_value_error():
    c = make_codec("int8")
    with pytest.raises(ValueError, match="non-finite"):
        c.encode({"x": np.array([1.0, np.nan], np.float32)})
    with pytest.raises(ValueError, match="residual"):
        c.encode({"x": np.ones(3, np.float32)}, residual={"x": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="residual names"):
        make_codec("sign").encode({"x": np.ones(3, np.float32)}, residual={"y": np.zeros(3, np.float32)})
    with pytest.raises(ValueError, match="65504"):
        make_codec("fp16").encode({"x": np.array([1e5], np.float32)})
    with pytest.raises(ValueError, match="max_params"):
        make_codec("fp32", max_params=10).encode({"x": np.ones(11, np.float32)})


@pytest.mark.parametrize("name", BUILTIN)
def test_empty_and_zero_updates_round_trip(name: str):
    codec = make_codec(name)
    for arrays in ({}, {"z": np.zeros((3, 0), np.float32)}, {"z": np.zeros(7, np.float32)}):
        d = codec.decode(codec.encode(arrays).data)
        assert list(d) == list(arrays) and all(d[k].shape == arrays[k].shape for k in arrays)
        if name not in ("sign",):
            assert all(not d[k].any() for k in d)


@pytest.mark.parametrize("name", BUILTIN)
def test_decode_flat_is_decode_in_stream_order(name: str):
    """The base station's form (names, shapes, one float32 vector) holds what decode gives, bit for bit."""
    g = np.random.default_rng(11)
    arrays = {"b": g.normal(0, 1e-2, 5), "w": g.normal(0, 1e-2, (3, 2, 2)), "a": g.normal(0, 1e-2, (4,))}
    data = make_codec(name).encode(arrays).data
    names, shapes, flat = make_codec(name).decode_flat(data)
    d = make_codec(name).decode(data)
    assert names == ["b", "w", "a"] == list(d) and shapes == [(5,), (3, 2, 2), (4,)]
    assert flat.dtype == np.float32 and flat.shape == (21,)
    assert np.concatenate([d[k].ravel() for k in names]).tobytes() == flat.tobytes()


def test_qsgd_decodes_norm_times_level_over_s_per_tensor():
    """Oracle: the levels are re-derived from the decoded values of a tensor with one known norm."""
    codec = make_codec("qsgd", levels=4)
    g = np.random.default_rng(12)
    arrays = {"x": g.normal(0, 1, 50).astype(np.float32), "y": g.normal(0, 3, 7).astype(np.float32)}
    d = codec.decode(codec.encode(arrays).data)
    for k, v in arrays.items():
        norm = np.float32(np.linalg.norm(v.astype(np.float64)))
        levels = np.rint(d[k].astype(np.float64) * 4 / float(norm))
        assert np.all(np.abs(levels) <= 4)
        assert d[k].tobytes() == ((norm * levels.astype(np.float32)) / np.float32(4)).astype(np.float32).tobytes()


# --- plugins ---------------------------------------------------------------------------------

_PLUGIN = '''
import numpy as np
from common.coding.registry import Body, Codec


class Half(Codec):
    name, lossless = "my_half", False

    def encode_body(self, tensors):
        flat = np.concatenate(tensors) if tensors else np.zeros(0, np.float32)
        return Body(b"", flat.astype("<f2").tobytes(), 16.0 * flat.size)

    def decode_body(self, sizes, params, payload):
        v = np.frombuffer(payload, dtype="<f2").astype(np.float32)
        if params or v.size != sum(sizes) or len(payload) % 2:
            raise ValueError("my_half payload does not match the sizes")
        return np.split(v, np.cumsum(sizes)[:-1])


def broken(**options):
    raise RuntimeError("never")


class Liar(Half):
    name = "not_me"
'''


def _install_plugin(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """An installed distribution as importlib.metadata finds one: its module and a
    ``*.dist-info`` with ``entry_points.txt`` on sys.path."""
    site = tmp_path / "site"
    dist = site / "my_half-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "my_half_codec.py").write_text(_PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-half\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[airfleet.codecs]\nmy_half = my_half_codec:Half\nmy_broken = my_half_codec:broken\n"
        "my_liar = my_half_codec:Liar\nmy_missing = my_half_codec:Nothing\nfp16 = my_half_codec:Liar\n"
    )
    monkeypatch.syspath_prepend(str(site))


def test_a_plugin_codec_is_found_through_its_entry_point_and_round_trips(tmp_path, monkeypatch):  # noqa: ANN001
    assert "my_half" not in available_codecs()
    _install_plugin(tmp_path, monkeypatch)
    names = available_codecs()
    assert names[: len(BUILTIN)] == BUILTIN and "my_half" in names[len(BUILTIN) :]
    assert check_codec_name("my_half") == "my_half"
    codec = make_codec("my_half", max_params=10000)
    x = _update(4)
    d = codec.decode(codec.encode(x).data)
    assert all(np.array_equal(d[k], x[k].astype(np.float16).astype(np.float32)) for k in x)
    # the framing and its checks come with the base class
    with pytest.raises(BitstreamError):
        codec.decode(codec.encode(x).data[:-1])
    with pytest.raises(BitstreamError, match="coded by"):
        codec.decode(make_codec("fp16").encode(x).data)
    # a plugin cannot shadow a built-in; broken ones say which and why
    assert type(make_codec("fp16")).__module__ == "common.coding.codecs"
    with pytest.raises(ValueError, match="my_broken.*RuntimeError|my_broken.*never"):
        make_codec("my_broken")
    with pytest.raises(ValueError, match="calls itself 'not_me'"):
        make_codec("my_liar")
    with pytest.raises(ValueError, match="my_missing.*does not load"):
        make_codec("my_missing")
