"""Process-level settings every part shares: the artifact cache root and torch threads.

One place decides where cached artifacts live (channels, the collective model, the CSI
backbones) and how many intra-op threads torch uses for a piece of work, so that a study,
a Ray worker and a SuperNode give the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["CACHE_ENV", "DEVICE_CHOICES", "KERNEL_ENV", "cache_root", "numerics_environment", "resolve_device", "torch_threads"]

#: the values of every ``device`` setting (studies, ``[server] device``)
DEVICE_CHOICES: tuple[str, ...] = ("cpu", "cuda", "auto")

#: environment variable that moves the cache when a scenario does not
CACHE_ENV = "AIRFLEET_CACHE_DIR"


def cache_root(configured: str | os.PathLike[str] | None = None) -> Path:
    """Root of the artifact cache.

    Parameters
    ----------
    configured : path-like or None, default None
        The scenario's ``[server] cache_dir`` (or a study's ``cache_dir``); ``""`` or None
        means not configured.

    Returns
    -------
    Path
        ``configured`` (``~`` expanded) if given, else ``$AIRFLEET_CACHE_DIR`` if set, else
        ``~/.cache/airfleet``. Artifacts live in sub-folders: ``channels/``,
        ``collective/``, ``csi_pretrain/``, ``radio/`` (link tables; always the environment/default root).
    """
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "airfleet"


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block on ``n`` torch intra-op threads (at least 1), then restore the count.

    Training results depend on the thread count (summation order), so work whose numbers
    must match across a study, a Ray worker and a SuperNode pins it here.
    """
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def resolve_device(setting: str = "cpu") -> torch.device:
    """The torch device of a ``device`` setting: ``"cpu"``, ``"cuda"``, or ``"auto"`` (CUDA
    when ``torch.cuda.is_available()``, else the CPU). A stage table's ``"class"`` (the
    device class's setting, which ``clients`` substitutes) means the CPU anywhere else.

    Raises
    ------
    ValueError
        For another value, or ``"cuda"`` on a machine without CUDA.
    """
    import torch

    if setting == "class":  # a stage table's "the class's device", read outside a fleet
        setting = "cpu"
    if setting not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {list(DEVICE_CHOICES)}, got {setting!r}")
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("device = 'cuda' but torch sees no CUDA device (use 'auto' or 'cpu')")
    return torch.device(setting)


#: environment variables that cap the instruction set of torch's, oneDNN's and MKL's CPU kernels
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def numerics_environment() -> dict[str, str]:
    """What decides a run's floating-point results besides the code and the seed.

    torch, oneDNN and MKL pick CPU kernels by the instruction set (SSE / AVX2 / AVX-512),
    each summing in its own order, and training amplifies the last-bit differences: a model
    trained on an AVX2 and on an AVX-512 machine can differ by decibels of NMSE
    (``benchmarks/cpu_isa_spread.py``). Returned: the torch / NumPy versions, torch's CPU
    kernel set (``torch.backends.cpu.get_cpu_capability()``), and the kernel caps in
    :data:`KERNEL_ENV` that are set. Written to each run directory as ``environment.json``.
    """
    import platform

    import numpy as np
    import torch

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "machine": platform.machine(),
    }
    out.update({k: os.environ[k] for k in KERNEL_ENV if k in os.environ})
    return out
