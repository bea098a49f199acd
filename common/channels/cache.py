"""On-disk cache of generated channel datasets (Arrow IPC files, one per request).

A request ``(task, n, seed, n_subcarriers)`` is keyed by a hash of its JSON spec plus
``FORMAT_VERSION`` (and, for the ``"imported"`` source, the source file's size and
modification time). The file holds the documented channel layout
(``common.channels.imported.channels_to_table``) and, in its schema metadata, the key
and a BLAKE2b checksum of the complex64 samples. A file that cannot be read, belongs to
another key or fails its checksum is regenerated. Writes go to a temporary file in the
same directory and are renamed into place (atomic on POSIX), so concurrent devices
never read half a file; two processes generating the same entry both write complete
files and the last rename wins.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import torch

from common.channels.base import ChannelTask, sample_channels
from common.channels.imported import channels_to_table, table_to_channels
from common.fingerprint import code_fingerprint
from common.runtime import cache_root

__all__ = ["FORMAT_VERSION", "default_cache_dir", "cache_key", "cache_path", "cached_channels"]

FORMAT_VERSION = 1
_log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """``channels/`` under the artifact cache root (``common.runtime.cache_root``:
    ``$AIRFLEET_CACHE_DIR`` if set, else ``~/.cache/airfleet``)."""
    return cache_root() / "channels"


def _source_fingerprint(task: ChannelTask) -> dict[str, int | str] | None:
    """What besides the spec decides the data: the imported file's size and mtime; the
    ``gbsm`` model in force (the default applies when the task does not name one)."""
    if task.source == "gbsm":
        from common.channels.gbsm import model_of

        return {"model": model_of(task)}
    if task.source != "imported" or not task.option("path"):
        return None
    try:
        st = os.stat(str(task.option("path")))
    except OSError:
        return None
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> str:
    """32-hex-char BLAKE2b digest of the request spec, ``FORMAT_VERSION`` and the source of
    ``common.channels`` and ``common.seeding`` (``common.fingerprint``)."""
    spec = {
        "task": task.to_dict(),
        "n": int(n),
        "seed": int(seed),
        "n_subcarriers": None if n_subcarriers is None else int(n_subcarriers),
        "format": FORMAT_VERSION,
        "source_file": _source_fingerprint(task),
        "code": code_fingerprint("common.channels", "common.seeding"),  # any edit there regenerates
    }
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def cache_path(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the request's file lives: ``<cache_dir>/<source>-<key>.arrow``."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"{task.source}-{cache_key(task, n, seed, n_subcarriers)}.arrow"


def _checksum(H: torch.Tensor) -> str:
    data = np.ascontiguousarray(H.detach().cpu().numpy().astype(np.complex64, copy=False))
    return hashlib.blake2b(data.tobytes(), digest_size=16).hexdigest()


def _read(path: Path, key: str, expect_shape: tuple[int, ...]) -> torch.Tensor | None:
    """The cached tensor, or None when the file is missing, unreadable, stale or corrupt."""
    if not path.is_file():
        return None
    try:
        table = feather.read_table(path, memory_map=False)
        meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
        H, _ = table_to_channels(table, str(path))
    except (OSError, ValueError, pa.ArrowException) as e:
        _log.warning("channel cache %s unreadable (%s); regenerating", path, e)
        return None
    if meta.get("airfleet.cache.key") != key or tuple(H.shape) != expect_shape:
        _log.warning("channel cache %s holds another request; regenerating", path)
        return None
    if meta.get("airfleet.cache.checksum") != _checksum(H):
        _log.warning("channel cache %s failed its checksum; regenerating", path)
        return None
    return H


def _write_atomic(path: Path, H: torch.Tensor, key: str, task: ChannelTask) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = channels_to_table(
        H,
        extra_metadata={
            "airfleet.cache.key": key,
            "airfleet.cache.checksum": _checksum(H),
            "airfleet.cache.format": str(FORMAT_VERSION),
            "airfleet.cache.task": json.dumps(task.to_dict(), sort_keys=True, default=str),
        },
    )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        feather.write_feather(table, tmp, compression="uncompressed")
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def cached_channels(
    task: ChannelTask,
    n: int,
    seed: int,
    n_subcarriers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> torch.Tensor:
    """``sample_channels(task, n, seed, n_subcarriers)``, read from the cache when present.

    Parameters
    ----------
    task, n, seed, n_subcarriers
        As for ``common.channels.sample_channels``.
    cache_dir : path-like, optional
        Directory of the cache (default ``default_cache_dir()``).

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``, equal to
        what the source generates.
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    key = cache_key(task, n, seed, n_subcarriers)
    path = cache_path(task, n, seed, n_subcarriers, cache_dir)
    expect = (n, task.n_rx, task.n_tx) if n_subcarriers is None else (n, n_subcarriers, task.n_rx, task.n_tx)
    H = _read(path, key, expect)
    if H is not None:
        return H
    H = sample_channels(task, n, seed, n_subcarriers)
    try:
        _write_atomic(path, H, key, task)
    except OSError as e:  # a read-only or full disk must not stop a simulation
        _log.warning("channel cache %s not written (%s)", path, e)
    return H
