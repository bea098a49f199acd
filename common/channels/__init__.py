"""Channel sources: a task (one channel distribution) -> complex channel tensors.

Built-in sources (``available_sources()``), all ``(task, n, seed, n_subcarriers=None)
-> complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``:

- ``"rayleigh"``: i.i.d. / Kronecker-correlated Rayleigh (``base.py``);
- ``"gbsm"``: built-in geometry-based stochastic model, spatially consistent
  (``gbsm.py``; ``gbsm.channels_along_track`` for a moving UE); option ``model``:
  ``"38.901"`` (default: UMi NLoS calibrated, ``gbsm_umi.py``, ``docs/channel_model.md``)
  or ``"legacy"`` (the first geometry, ``gbsm.py``);
- ``"umi"``, ``"uma"``, ``"rma"``, ``"cdl"``: Sionna TR 38.901 (``sionna_38901.py``,
  imported lazily);
- ``"imported"``: files in the layout of ``docs/channel_import.md`` (``imported.py``).

``cached_channels`` (``cache.py``) is ``sample_channels`` behind an on-disk cache; it is
loaded on first use so that importing this package stays light.
"""

from typing import Any

from common.channels.base import (
    ChannelTask,
    available_sources,
    get_source,
    register_source,
    sample_channels,
)

__all__ = ["ChannelTask", "available_sources", "cached_channels", "get_source", "register_source", "sample_channels"]


def __getattr__(name: str) -> Any:
    if name == "cached_channels":
        from common.channels.cache import cached_channels

        return cached_channels
    raise AttributeError(f"module 'common.channels' has no attribute {name!r}")
