"""Channel tasks and the registry of channel sources.

A *task* is one channel distribution (the learngene paper's "task": UEs in one 5 m
circle; for the built-in model, one scatterer environment). Every source turns a task
plus a sample count and a seed into complex channel matrices.

Conventions, for every source:

- narrowband: ``H: complex64 [n, n_rx, n_tx]`` (uplink: n_rx = BS antennas, n_tx = UE antennas)
- wideband (``n_subcarriers`` given): ``H: complex64 [n, n_subcarriers, n_rx, n_tx]``
- channels are normalised so that ``E[|h_ij|^2] = 1`` per entry (path loss is a
  task property, not part of the per-sample SNR), unless a source documents otherwise.
  This is an ensemble mean, not a per-sample constraint. Documented exceptions: the
  Sionna sources with a directional element pattern (``bs_pattern="38.901"``) scale
  by the element gain unless ``normalise="sample"``; ``"imported"`` with
  ``normalise="none"`` keeps the file's values.
- ``seed`` picks the draw within the task; the same ``(task, n, seed, n_subcarriers)``
  gives bit-identical tensors in any process.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # torch is imported where tensors are made: a device with no
    import torch  # model work (overhead studies) never pays for importing it

__all__ = [
    "ChannelTask",
    "ChannelSource",
    "register_source",
    "get_source",
    "available_sources",
    "sample_channels",
]


@dataclass(frozen=True)
class ChannelTask:
    """One channel distribution.

    Parameters
    ----------
    source : str
        Name of a registered source (``available_sources()``).
    n_rx, n_tx : int
        Receive (BS) and transmit (UE) antenna counts.
    task_id : int
        Index of the distribution within its family (e.g. which UE circle).
    seed : int
        Root seed of the family: the task's geometry derives from ``(seed, task_id)``.
    params : tuple of (str, value) pairs, default ()
        Source-specific options, kept sorted so equal tasks hash equally. Build with
        ``ChannelTask.make(...)``.
    """

    source: str
    n_rx: int
    n_tx: int
    task_id: int = 0
    seed: int = 0
    params: tuple[tuple[str, Any], ...] = field(default=())

    @classmethod
    def make(
        cls,
        source: str,
        n_rx: int,
        n_tx: int,
        task_id: int = 0,
        seed: int = 0,
        **params: Any,
    ) -> ChannelTask:
        """Build a task with keyword options (sorted for a stable hash)."""
        return cls(source, int(n_rx), int(n_tx), int(task_id), int(seed), tuple(sorted(params.items())))

    def option(self, key: str, default: Any = None) -> Any:
        """The value of source option ``key``, or ``default``."""
        return dict(self.params).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable description (what a cache key is made from)."""
        return {
            "source": self.source,
            "n_rx": self.n_rx,
            "n_tx": self.n_tx,
            "task_id": self.task_id,
            "seed": self.seed,
            "params": dict(self.params),
        }

    def spec_hash(self) -> str:
        """A stable hex digest of the task description (16 hex chars)."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class ChannelSource(Protocol):
    """What a channel source provides.

    ``__call__(task, n, seed, n_subcarriers=None) -> complex64 tensor`` as documented in
    the module docstring. ``seed`` selects the draw of ``n`` samples *within* the task.
    """

    def __call__(
        self, task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None
    ) -> torch.Tensor: ...


_SOURCES: dict[str, ChannelSource] = {}


def register_source(name: str) -> Callable[[ChannelSource], ChannelSource]:
    """Decorator that registers a channel source under ``name``."""

    def deco(fn: ChannelSource) -> ChannelSource:
        _SOURCES[name] = fn
        return fn

    return deco


def get_source(name: str) -> ChannelSource:
    """The source registered as ``name``; ``ValueError`` naming the known ones otherwise.

    A built-in source's module is imported on first use only (Sionna and torch are heavy).
    """
    if name not in _SOURCES and name in BUILTIN_SOURCES:
        importlib.import_module(BUILTIN_SOURCES[name])
    if name not in _SOURCES:
        raise ValueError(f"unknown channel source {name!r}; expected one of {available_sources()}")
    return _SOURCES[name]


def available_sources() -> list[str]:
    """Names of all channel sources: registered ones and the built-ins (not imported)."""
    return sorted(set(_SOURCES) | set(BUILTIN_SOURCES))


def sample_channels(
    task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None
) -> torch.Tensor:
    """Draw ``n`` channels of ``task`` (no caching; see ``common.channels.cache``).

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_rx, n_tx]``, or ``[n, n_subcarriers, n_rx, n_tx]``.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    import torch

    H = get_source(task.source)(task, n, seed, n_subcarriers)
    expect = (n, task.n_rx, task.n_tx) if n_subcarriers is None else (n, n_subcarriers, task.n_rx, task.n_tx)
    if tuple(H.shape) != expect:
        raise RuntimeError(f"source {task.source!r} returned shape {tuple(H.shape)}, expected {expect}")
    return H.to(torch.complex64)


@register_source("rayleigh")
def rayleigh(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> torch.Tensor:
    """i.i.d. Rayleigh fading, CN(0, 1) entries; the task only fixes the shape.

    Option ``correlation`` (float in [0, 1), default 0): exponential correlation
    ``rho^|i-j|`` at both ends (Kronecker model); different task_ids then share it.
    Wideband requests give independent draws per subcarrier.
    """
    import torch

    g = torch.Generator().manual_seed(int(seed))
    shape = (n, task.n_rx, task.n_tx) if n_subcarriers is None else (n, n_subcarriers, task.n_rx, task.n_tx)
    H = torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g)) / (2**0.5)
    rho = float(task.option("correlation", 0.0))
    if rho:
        def sqrt_corr(m: int) -> torch.Tensor:
            idx = torch.arange(m)
            R = rho ** (idx[:, None] - idx[None, :]).abs().double()
            w, V = torch.linalg.eigh(R)
            return (V * w.clamp_min(0).sqrt()) @ V.T

        Rr = sqrt_corr(task.n_rx).to(torch.complex64)
        Rt = sqrt_corr(task.n_tx).to(torch.complex64)
        H = Rr @ H @ Rt.T
    return H.to(torch.complex64)


#: built-in source name -> the module that registers it (imported by get_source on demand)
BUILTIN_SOURCES: dict[str, str] = {
    "gbsm": "common.channels.gbsm",
    "umi": "common.channels.sionna_38901",
    "uma": "common.channels.sionna_38901",
    "rma": "common.channels.sionna_38901",
    "cdl": "common.channels.sionna_38901",
    "imported": "common.channels.imported",
}


def task_from_mapping(d: Mapping[str, Any]) -> ChannelTask:
    """Inverse of ``ChannelTask.to_dict``."""
    return ChannelTask.make(d["source"], d["n_rx"], d["n_tx"], d.get("task_id", 0), d.get("seed", 0), **dict(d.get("params", {})))
