"""Range-coder throughput and overhead vs the ideal information content (prints JSON).

Latents: symbols drawn from the coding tables of a DeepFactorized density (quantiles fitted)
with escapes; updates: a 200,000-parameter decoder update drawn from the spike-and-slab prior
(t = 5e-3, sigma = 5e-2, alpha = 1000, 64 bins) and one coded under the uniform prior.

Usage: ``python benchmarks/coder_throughput.py [--symbols N] [--params N] [--repeats R]``
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from common.coding import DeepFactorized, UpdateQuantizer, make_prior
from common.coding.latent_codec import decode_latents, encode_latents, latent_ideal_bits
from common.coding.update_codec import decode_update, encode_update, update_ideal_bits


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _stats(n: int, enc_s: float, dec_s: float, words: np.ndarray, ideal: float) -> dict[str, float]:
    """Throughput (symbols/s) and actual payload bits vs the ideal information content."""
    return {
        "encode_symbols_per_s": n / enc_s,
        "decode_symbols_per_s": n / dec_s,
        "actual_bits": int(32 * words.size),
        "ideal_bits": ideal,
        "overhead_pct": 100.0 * (32 * words.size / ideal - 1.0),
        "bits_per_symbol_actual": 32 * words.size / n,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--symbols", type=int, default=1_000_000, help="latent symbols")
    ap.add_argument("--params", type=int, default=200_000, help="update parameters")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)

    torch.manual_seed(0)
    df = DeepFactorized(2, init_scale=4.0)
    df.fit_quantiles()
    tables = df.pmf_tables()
    per = a.symbols // 2
    cols = []
    for t in tables:
        idx = rng.choice(t.pmf.size, size=per, p=t.pmf)
        cols.append(np.where(idx == t.n_symbols, t.offset + t.n_symbols + 5, idx + t.offset))
    y = np.stack(cols, axis=1).reshape(per, 2, 1, 1).astype(np.int32)
    enc_s, (words, n_esc) = _best(lambda: encode_latents(y, tables), a.repeats)
    dec_s, y2 = _best(lambda: decode_latents(words, tables, y.shape), a.repeats)
    assert np.array_equal(y2, y)
    ideal = latent_ideal_bits(y, tables)
    latents = {"symbols": int(y.size), "escapes": int(n_esc), **_stats(y.size, enc_s, dec_s, words, ideal)}

    q = UpdateQuantizer(5e-3, 64)
    updates = {}
    for kind in ("spike_slab", "uniform"):
        prior = make_prior(kind, q, sigma=5e-2, alpha=1000.0)
        ss = make_prior("spike_slab", q, sigma=5e-2, alpha=1000.0)
        k = (rng.choice(np.arange(q.k_min, q.k_max + 1), size=a.params, p=ss.pmf())).astype(np.int32)
        enc_s, w = _best(lambda: encode_update(k, prior), a.repeats)
        dec_s, k2 = _best(lambda: decode_update(w, prior, k.size), a.repeats)
        assert np.array_equal(k2, k)
        ideal = update_ideal_bits(k, prior)
        updates[kind] = {"params": int(k.size), "nonzero": int(np.count_nonzero(k)), **_stats(k.size, enc_s, dec_s, w, ideal)}
    zero = np.zeros(a.params, np.int32)
    ss = make_prior("spike_slab", q)
    updates["all_zero_spike_slab_bits"] = int(32 * encode_update(zero, ss).size)
    updates["all_zero_uniform_bits"] = int(32 * encode_update(zero, make_prior("uniform", q)).size)
    print(json.dumps({"benchmark": "coder_throughput", "latents": latents, "update_200k": updates}, indent=1))


if __name__ == "__main__":
    main()
