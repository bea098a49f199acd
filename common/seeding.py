"""Deterministic seed derivation: every random draw in airfleet derives from the scenario seed.

A seed for any purpose is ``derive_seed(root, "purpose", device_id, round, ...)``: a stable
hash of the root seed and a path of labels, so that adding a new consumer of randomness
never shifts the draws of an existing one (unlike consuming a shared generator).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["derive_seed", "numpy_rng", "sionna_seeded", "torch_generator"]


def derive_seed(root: int, *path: str | int) -> int:
    """Return a 63-bit seed derived from ``root`` and a path of labels.

    Parameters
    ----------
    root : int
        The scenario seed.
    *path : str | int
        Labels that name the consumer, e.g. ``("channels", device_id)``.

    Returns
    -------
    int
        A non-negative integer below 2**63, stable across processes and platforms.
    """
    h = hashlib.blake2b(digest_size=8)
    h.update(str(int(root)).encode())
    for p in path:
        h.update(b"/")
        h.update(str(p).encode())
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def numpy_rng(root: int, *path: str | int) -> np.random.Generator:
    """A NumPy generator seeded with ``derive_seed(root, *path)``."""
    return np.random.default_rng(derive_seed(root, *path))


def torch_generator(root: int, *path: str | int) -> torch.Generator:
    """A CPU torch generator seeded with ``derive_seed(root, *path)``."""
    import torch

    g = torch.Generator(device="cpu")
    g.manual_seed(derive_seed(root, *path))
    return g


@contextlib.contextmanager
def sionna_seeded(seed: int) -> Iterator[None]:
    """Seed Sionna's generators for the block; restore torch's global CPU RNG, which
    setting Sionna's seed reseeds too."""
    import torch
    from sionna.phy import config

    state = torch.get_rng_state()
    config.seed = int(seed) % (1 << 63)
    try:
        yield
    finally:
        torch.set_rng_state(state)
