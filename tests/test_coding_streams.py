"""Range-coded latent and update streams: identity, overhead vs ideal, priors, framing."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.coding import BitstreamError, DeepFactorized, PmfTable, UpdateQuantizer, make_prior
from common.coding.bitstream import FRAME_OVERHEAD_BYTES, KIND_LATENT, KIND_UPDATE, pack_frame, unpack_frame
from common.coding.latent_codec import (
    ESCAPE_MAGNITUDE_BITS,
    decode_latents,
    encode_latents,
    latent_ideal_bits,
    pack_latents,
    unpack_latents,
)
from common.coding.update_codec import (
    apply_update,
    decode_update,
    encode_update,
    pack_update,
    quantize_update,
    unpack_update,
    update_ideal_bits,
)

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _laplace_tables(scales: tuple[float, ...] = (1.5, 4.0), support: int = 12) -> list[PmfTable]:
    tables = []
    for b in scales:
        ints = np.arange(-support, support + 1)
        p = np.exp(-np.abs(ints) / b)
        p = np.concatenate([p, [1e-3 * p.sum()]])
        tables.append(PmfTable(-support, p))
    return tables


@FAST
@given(
    shape=st.tuples(st.integers(1, 3), st.just(2), st.integers(1, 5), st.integers(1, 5)),
    spread=st.integers(1, 40),
    seed=st.integers(0, 2**31 - 1),
)
def test_latent_encode_decode_identity_including_escapes(shape: tuple[int, ...], spread: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(-spread, spread + 1, size=shape).astype(np.int32)
    tables = _laplace_tables()
    words, n_esc = encode_latents(y, tables)
    assert n_esc == int(np.sum(np.abs(y) > 12))
    np.testing.assert_array_equal(decode_latents(words, tables, y.shape), y)


def test_escape_reaches_far_values_and_rejects_beyond_range() -> None:
    tables = _laplace_tables()
    y = np.array([[[[0]], [[(1 << ESCAPE_MAGNITUDE_BITS) + 12]]], [[[-(1 << ESCAPE_MAGNITUDE_BITS) - 12]], [[5]]]], np.int32)
    words, n_esc = encode_latents(y, tables)
    assert n_esc == 2
    np.testing.assert_array_equal(decode_latents(words, tables, y.shape), y)
    with pytest.raises(ValueError, match="escape range"):
        encode_latents(y + np.int32(1) * (y > 0), tables)


def test_latent_actual_bits_within_one_percent_of_ideal() -> None:
    tables = _laplace_tables()
    rng = np.random.default_rng(3)
    cols = []
    for t in tables:
        idx = rng.choice(t.pmf.size, size=(64, 8, 8), p=t.pmf)
        v = np.where(idx == t.n_symbols, 40, idx + t.offset)  # escapes land outside the table
        cols.append(v)
    y = np.stack(cols, axis=1).astype(np.int32)
    words, n_esc = encode_latents(y, tables)
    ideal = latent_ideal_bits(y, tables)
    assert n_esc > 0
    assert 32 * words.size <= ideal * 1.01 + 64
    assert 32 * words.size >= ideal - 32  # cannot beat the information content


def test_learned_density_tables_code_its_own_samples() -> None:
    torch.manual_seed(0)
    df = DeepFactorized(2, init_scale=4.0)
    tables = df.pmf_tables()
    for t in tables:
        assert t.pmf.sum() == pytest.approx(1.0)
        assert t.pmf[-1] >= df.likelihood_bound
    y = torch.round(torch.randn(16, 2, 4, 4) * 3).to(torch.int32).numpy()
    words, _ = encode_latents(y, tables)
    np.testing.assert_array_equal(decode_latents(words, tables, y.shape), y)
    # the table's probabilities are the training path's likelihoods of the same integers
    lik = df.likelihood(torch.from_numpy(y).float()).detach().numpy()
    t0 = tables[0]
    inside = (y[:, 0] >= t0.offset) & (y[:, 0] < t0.offset + t0.n_symbols)
    np.testing.assert_allclose(lik[:, 0][inside], t0.pmf[y[:, 0][inside] - t0.offset] * 1.0, rtol=2e-3)


def test_quantile_tracking_moves_quantiles_to_tail_masses() -> None:
    torch.manual_seed(0)
    df = DeepFactorized(1, init_scale=10.0, tail_mass=1e-3)
    opt = torch.optim.Adam([df.quantiles], lr=1.0)
    before = df.aux_loss().item()
    for _ in range(300):
        opt.zero_grad()
        loss = df.aux_loss()
        loss.backward()
        opt.step()
    assert df.aux_loss().item() < 0.05 * before
    x = df.quantiles.detach().reshape(1, 1, 3)
    cdf = torch.sigmoid(df._logits_cumulative(x)).reshape(3)
    assert cdf[0].item() == pytest.approx(5e-4, rel=0.2)
    assert cdf[2].item() == pytest.approx(1 - 5e-4, abs=1e-4)
    # bisection lands on the aux loss's minimum directly
    df2 = DeepFactorized(1, init_scale=10.0, tail_mass=1e-3)
    df2.fit_quantiles()
    assert df2.aux_loss().item() < 1e-3
    cdf2 = torch.sigmoid(df2._logits_cumulative(df2.quantiles.detach())).reshape(3)
    assert cdf2[0].item() == pytest.approx(5e-4, rel=1e-3) and cdf2[1].item() == pytest.approx(0.5, abs=1e-4)


# ----- updates ------------------------------------------------------------------------


@FAST
@given(
    n=st.integers(1, 3000),
    n_bins=st.sampled_from([2, 3, 4, 16, 64, 255, 256]),
    density=st.floats(0.0, 1.0),
    prior_kind=st.sampled_from(["spike_slab", "uniform"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_update_encode_decode_identity(n: int, n_bins: int, density: float, prior_kind: str, seed: int) -> None:
    q = UpdateQuantizer(5e-3, n_bins)
    prior = make_prior(prior_kind, q)
    rng = np.random.default_rng(seed)
    k = rng.integers(q.k_min, q.k_max + 1, size=n).astype(np.int32)
    k[rng.random(n) > density] = 0
    words = encode_update(k, prior)
    np.testing.assert_array_equal(decode_update(words, prior, n), k)
    framed = pack_update(k, prior, base_tag=1234)
    np.testing.assert_array_equal(unpack_update(framed, prior, n, base_tag=1234), k)


def test_quantizer_has_exactly_n_bins_and_ste_passes_gradient() -> None:
    for b in (2, 3, 64, 255):
        q = UpdateQuantizer(1e-2, b)
        assert q.k_max - q.k_min + 1 == b
        k = q.to_int(torch.linspace(-10, 10, 2001))
        assert k.min().item() == q.k_min and k.max().item() == q.k_max
    q = UpdateQuantizer(1e-2, 64)
    d = torch.tensor([0.0041, -0.0162, 0.9], requires_grad=True)
    out = q.ste(d)
    torch.testing.assert_close(out.detach(), torch.tensor([0.0, -0.02, 0.31]))
    out.sum().backward()
    torch.testing.assert_close(d.grad, torch.ones(3))


def test_spike_slab_pmf_closed_form() -> None:
    t, sigma, alpha = 5e-3, 5e-2, 1000.0
    prior = make_prior("spike_slab", UpdateQuantizer(t, 64), sigma=sigma, alpha=alpha)
    p = prior.pmf()
    assert p.sum() == pytest.approx(1.0)
    from scipy.stats import norm

    spike0 = norm.cdf(3.0) - norm.cdf(-3.0)  # t/2 = 3 spike sigmas
    slab0 = norm.cdf(t / 2 / sigma) - norm.cdf(-t / 2 / sigma)
    assert p[32] == pytest.approx((slab0 + alpha * spike0) / (1 + alpha), rel=1e-9)
    assert np.all(np.diff(p[1:33]) > 0) and np.all(np.diff(p[32:-1]) < 0)  # unimodal at 0
    # the edge bins take the tails (eq. 15): P(delta < t (k_min + 1/2))
    lo_edge = (norm.cdf(-31.5 * t / sigma) + alpha * norm.cdf(-31.5 * 6)) / (1 + alpha)
    assert p[0] == pytest.approx(lo_edge, rel=1e-6)


def test_spike_slab_prices_zero_update_far_below_uniform() -> None:
    q = UpdateQuantizer(5e-3, 64)
    k = np.zeros(200_000, np.int32)
    ss, uni = make_prior("spike_slab", q), make_prior("uniform", q)
    bits_ss = 32 * encode_update(k, ss).size
    bits_uni = 32 * encode_update(k, uni).size
    assert bits_uni == pytest.approx(200_000 * 6, abs=64)
    assert bits_ss < 2_000 < bits_uni / 500
    assert update_ideal_bits(k, ss) < 0.01 * 200_000


@pytest.mark.parametrize("prior_kind", ["spike_slab", "uniform"])
def test_update_actual_bits_within_one_percent_of_ideal(prior_kind: str) -> None:
    q = UpdateQuantizer(5e-3, 64)
    prior = make_prior(prior_kind, q)
    rng = np.random.default_rng(0)
    k = rng.choice(np.arange(q.k_min, q.k_max + 1), size=200_000, p=prior.pmf()).astype(np.int32)
    words = encode_update(k, prior)
    ideal = update_ideal_bits(k, prior)
    assert 32 * words.size <= ideal * 1.01 + 64


def test_apply_update_is_base_plus_t_times_k() -> None:
    q = UpdateQuantizer(5e-3, 64)
    rng = np.random.default_rng(1)
    base = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    new = [b + rng.normal(0, 0.02, b.shape).astype(np.float32) for b in base]
    k = quantize_update(new, base, q)
    out = apply_update(base, k, q)
    assert [o.shape for o in out] == [b.shape for b in base]
    flat_delta = np.concatenate([(o - b).ravel() for o, b in zip(out, base)])
    np.testing.assert_allclose(flat_delta, 5e-3 * k, atol=1e-6)
    true_delta = np.concatenate([(n - b).ravel() for n, b in zip(new, base)])
    inside = np.abs(true_delta) < q.t * (q.k_max - 0.5)
    assert np.all(np.abs(flat_delta - true_delta)[inside] <= q.t / 2 + 1e-6)


# ----- framing --------------------------------------------------------------------------


def test_frame_round_trip_and_bounds() -> None:
    words = np.arange(7, dtype=np.uint32)
    frame = pack_frame(KIND_LATENT, b"abc", words)
    assert len(frame) == FRAME_OVERHEAD_BYTES + 3 + 28
    f, w = unpack_frame(frame, KIND_LATENT, 3, 7)
    assert f == b"abc"
    np.testing.assert_array_equal(w, words)
    with pytest.raises(BitstreamError, match="oversized"):
        unpack_frame(frame, KIND_LATENT, 3, 6)
    with pytest.raises(BitstreamError, match="truncated"):
        unpack_frame(frame[:10], KIND_LATENT, 3, 7)
    with pytest.raises(BitstreamError, match="kind"):
        unpack_frame(frame, 2, 3, 7)


def test_forged_header_with_huge_counts_is_refused_before_decoding() -> None:
    tables = _laplace_tables()
    y = np.zeros((2, 2, 3, 3), np.int32)
    frame = bytearray(pack_latents(y, tables, model_tag=9))
    # claim 2**32-1 samples, with a valid CRC: the shape check must refuse it
    struct.pack_into("<I", frame, 8, 0xFFFFFFFF)
    body = bytes(frame[:-4])
    forged = body + struct.pack("<I", zlib.crc32(body))
    with pytest.raises(BitstreamError, match="batch"):
        unpack_latents(forged, tables, (2, 3, 3), max_batch=16, model_tag=9)
    with pytest.raises(BitstreamError, match="decoder"):
        unpack_latents(pack_latents(y, tables, model_tag=9), tables, (2, 3, 3), max_batch=16, model_tag=10)
    np.testing.assert_array_equal(unpack_latents(pack_latents(y, tables, 9), tables, (2, 3, 3), 16, 9), y)


def test_update_header_must_match_receiver() -> None:
    q = UpdateQuantizer(5e-3, 64)
    prior = make_prior("spike_slab", q)
    k = np.zeros(100, np.int32)
    k[3] = 2
    data = pack_update(k, prior, base_tag=5)
    with pytest.raises(BitstreamError, match="parameters"):
        unpack_update(data, prior, 101, base_tag=5)
    with pytest.raises(BitstreamError, match="against decoder"):
        unpack_update(data, prior, 100, base_tag=6)
    with pytest.raises(BitstreamError, match="n_bins"):
        unpack_update(data, make_prior("spike_slab", UpdateQuantizer(5e-3, 32)), 100, base_tag=5)
    with pytest.raises(BitstreamError, match="t="):
        unpack_update(data, make_prior("spike_slab", UpdateQuantizer(1e-3, 64)), 100, base_tag=5)


def _reframe(frame: bytes, words: np.ndarray) -> bytes:
    """``frame``'s header with other payload words, their count and a recomputed CRC: a
    forgery that every framing check passes."""
    flen = struct.unpack_from("<H", frame, 6)[0]
    body = frame[: 8 + flen] + struct.pack("<I", words.size) + np.asarray(words, dtype="<u4").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def test_latent_payload_with_words_appended_replaced_or_missing_is_refused() -> None:
    tables = _laplace_tables()
    y = np.random.default_rng(5).integers(-6, 7, size=(4, 2, 3, 3)).astype(np.int32)
    frame = pack_latents(y, tables, model_tag=9)
    _, words = unpack_frame(frame, KIND_LATENT, 16, 1000)
    assert _reframe(frame, words) == frame  # the forging tool rebuilds the genuine frame byte for byte
    slack = words.copy()
    slack[-1] ^= 1  # a slack bit of the last word: the latents decode unchanged
    mid = words.copy()
    mid[1] = ~mid[1]  # the latents decode into others
    # (forged words, what the message names, whether they still decode to y)
    forgeries = [
        (np.concatenate([words, np.array([0x12345678, 0x9ABCDEF0], np.uint32)]), "appended", True),
        (words[:-1], "replaced or missing", False),
        (slack, "replaced or missing", True),
        (mid, "replaced or missing", False),
    ]
    for forged_words, what, same in forgeries:
        forged = _reframe(frame, forged_words)
        # the frame is well formed and its words decode: only the exactness check can refuse it
        _, got = unpack_frame(forged, KIND_LATENT, 16, 1000)
        np.testing.assert_array_equal(got, forged_words)
        assert np.array_equal(decode_latents(got, tables, y.shape), y) == same
        with pytest.raises(BitstreamError, match=f"words {what}"):
            unpack_latents(forged, tables, (2, 3, 3), max_batch=16, model_tag=9)
    np.testing.assert_array_equal(unpack_latents(frame, tables, (2, 3, 3), max_batch=16, model_tag=9), y)


def test_update_payload_with_words_appended_or_replaced_is_refused() -> None:
    prior = make_prior("spike_slab", UpdateQuantizer(5e-3, 64))
    k = np.zeros(200, np.int32)
    k[[3, 50, 120]] = [2, -1, 5]
    frame = pack_update(k, prior, base_tag=5)
    fields_size = struct.unpack_from("<H", frame, 6)[0]
    _, words = unpack_frame(frame, KIND_UPDATE, fields_size, 1000)
    assert _reframe(frame, words) == frame
    appended = np.concatenate([words, np.array([7, 7], np.uint32)])
    replaced = words.copy()
    replaced[-1] ^= 1
    # appended words decode to the same update: only the exactness check can refuse them
    np.testing.assert_array_equal(decode_update(appended, prior, 200), k)
    # a replaced word is refused by the exactness check or, first, by the non-zero count
    for forged_words, match in ((appended, "update payload .*words appended"), (replaced, "words replaced|non-zero updates")):
        with pytest.raises(BitstreamError, match=match):
            unpack_update(_reframe(frame, forged_words), prior, 200, base_tag=5)
    np.testing.assert_array_equal(unpack_update(frame, prior, 200, base_tag=5), k)


def test_update_norm_is_exactly_rounded_whatever_the_memory_alignment() -> None:
    """The L2 norm the rounds table reports for an update: the exact value rounded once
    (oracle: rational arithmetic), the same for a copy that sits 4 bytes off alignment."""
    from fractions import Fraction

    from common.coding.update_codec import update_norm

    rng = np.random.default_rng(3)
    a = (rng.standard_normal(10_001) * np.logspace(-6, 2, 10_001)).astype(np.float32)
    b = rng.standard_normal((7, 5)).astype(np.float32)
    buf = np.zeros(a.size + 1, np.float32)
    shifted = np.frombuffer(buf.data, dtype=np.float32, offset=4)
    shifted[:] = a
    exact = sum(Fraction(float(x)) ** 2 for x in np.concatenate([a, b.ravel()]))
    assert update_norm([a, b]) == update_norm([shifted, b]) == update_norm({"x": a, "y": b}.values())
    assert update_norm([a, b]) == math.sqrt(float(exact))  # the correctly rounded sum, then one sqrt
    assert update_norm([]) == 0.0
