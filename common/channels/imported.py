"""Channels exported from elsewhere (QuaDRiGa, DeepMIMO, measurements): source ``"imported"``.

File layouts are documented in ``docs/channel_import.md``:

- Arrow / Parquet (``.parquet``, ``.arrow``, ``.feather``): one row per channel sample;
  columns ``real`` and ``imag``, each ``fixed_size_list<float32>[n_sc * n_rx * n_tx]``
  (row-major over ``(sc, rx, tx)``); optional ``task_id`` (int64); schema metadata
  ``n_rx``, ``n_tx``, ``n_sc`` (decimal strings; ``n_sc = 0`` means narrowband) and
  ``airfleet.channels.version`` (``1``).
- NumPy ``.npy`` and MATLAB ``.mat`` (v5/v7, read by ``scipy.io.loadmat``): one complex
  array (variable ``H`` in ``.mat`` by default) with axes ``"nrt"`` (samples, rx, tx) or
  ``"ncrt"`` (samples, subcarriers, rx, tx); other axis orders via the ``axes`` option
  (e.g. ``"rtcn"`` for QuaDRiGa's ``[n_rx, n_tx, n_carriers, n_snapshots]``). A real
  array whose last axis has size 2 is read as (real, imag).

Every problem with a file raises ``ValueError`` naming the file and what is wrong.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import torch

from common.channels.base import ChannelTask, register_source
from common.seeding import numpy_rng

__all__ = [
    "LAYOUT_VERSION",
    "channels_to_table",
    "table_to_channels",
    "write_channels",
    "read_channels",
    "imported",
]

LAYOUT_VERSION = "1"
_ARROW_SUFFIXES = (".arrow", ".feather", ".ipc")
_SUFFIXES = (".parquet", *_ARROW_SUFFIXES, ".npy", ".mat")


def channels_to_table(H: torch.Tensor | np.ndarray, task_ids: np.ndarray | None = None, extra_metadata: dict[str, str] | None = None) -> pa.Table:
    """The documented Arrow layout of a channel tensor.

    Parameters
    ----------
    H : torch.Tensor or np.ndarray
        ``complex [n, n_rx, n_tx]`` or ``complex [n, n_sc, n_rx, n_tx]``.
    task_ids : np.ndarray, optional
        ``int [n]`` task of each sample (written as column ``task_id``).
    extra_metadata : dict of str -> str, optional
        Additional schema metadata.

    Returns
    -------
    pa.Table
        Columns ``real``, ``imag`` (``fixed_size_list<float32>``), optionally ``task_id``.
    """
    h = H.detach().cpu().numpy() if isinstance(H, torch.Tensor) else np.asarray(H)
    if not np.iscomplexobj(h) or h.ndim not in (3, 4):
        raise ValueError(f"expected complex H [n, n_rx, n_tx] or [n, n_sc, n_rx, n_tx], got {h.dtype} {h.shape}")
    h = np.ascontiguousarray(h, dtype=np.complex64)
    n = h.shape[0]
    width = int(np.prod(h.shape[1:]))
    cols: dict[str, pa.Array] = {
        "real": pa.FixedSizeListArray.from_arrays(pa.array(h.real.reshape(-1), pa.float32()), width),
        "imag": pa.FixedSizeListArray.from_arrays(pa.array(h.imag.reshape(-1), pa.float32()), width),
    }
    if task_ids is not None:
        tid = np.asarray(task_ids, dtype=np.int64)
        if tid.shape != (n,):
            raise ValueError(f"task_ids must have shape ({n},), got {tid.shape}")
        cols["task_id"] = pa.array(tid, pa.int64())
    meta = {
        "airfleet.channels.version": LAYOUT_VERSION,
        "n_rx": str(h.shape[-2]),
        "n_tx": str(h.shape[-1]),
        "n_sc": str(h.shape[1] if h.ndim == 4 else 0),
    }
    meta.update(extra_metadata or {})
    return pa.table(cols).replace_schema_metadata(meta)


def table_to_channels(table: pa.Table, where: str = "table") -> tuple[torch.Tensor, np.ndarray | None]:
    """Inverse of ``channels_to_table``, validating the layout.

    Parameters
    ----------
    table : pa.Table
    where : str
        Name used in error messages (the file).

    Returns
    -------
    H : torch.Tensor
        ``complex64 [n, n_rx, n_tx]`` or ``[n, n_sc, n_rx, n_tx]``.
    task_ids : np.ndarray or None
        ``int64 [n]`` if the table has a ``task_id`` column.
    """
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    for key in ("n_rx", "n_tx", "n_sc"):
        if key not in meta:
            raise ValueError(f"{where}: schema metadata key {key!r} is missing (expected n_rx, n_tx, n_sc)")
    try:
        n_rx, n_tx, n_sc = int(meta["n_rx"]), int(meta["n_tx"]), int(meta["n_sc"])
    except ValueError as e:
        raise ValueError(f"{where}: metadata n_rx/n_tx/n_sc must be integers, got {meta}") from e
    if n_rx < 1 or n_tx < 1 or n_sc < 0:
        raise ValueError(f"{where}: expected n_rx, n_tx >= 1 and n_sc >= 0, got {n_rx}, {n_tx}, {n_sc}")
    width = max(n_sc, 1) * n_rx * n_tx
    parts = []
    for name in ("real", "imag"):
        if name not in table.column_names:
            raise ValueError(f"{where}: column {name!r} is missing (expected 'real' and 'imag')")
        col = table.column(name).combine_chunks()
        if not pa.types.is_fixed_size_list(col.type) or col.type.list_size != width:
            raise ValueError(f"{where}: column {name!r} must be fixed_size_list<float32>[{width}], got {col.type}")
        if col.null_count or col.values.null_count:
            raise ValueError(f"{where}: column {name!r} contains nulls")
        parts.append(col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False))
    n = table.num_rows
    h = (parts[0] + 1j * parts[1]).astype(np.complex64)
    shape = (n, n_rx, n_tx) if n_sc == 0 else (n, n_sc, n_rx, n_tx)
    tid = None
    if "task_id" in table.column_names:
        tid = table.column("task_id").to_numpy().astype(np.int64)
    return torch.from_numpy(h.reshape(shape)), tid


def write_channels(path: str | os.PathLike[str], H: torch.Tensor | np.ndarray, task_ids: np.ndarray | None = None, variable: str = "H") -> Path:
    """Export channels in the documented layout chosen by the file suffix.

    Parameters
    ----------
    path : path-like
        ``.parquet``, ``.arrow`` / ``.feather`` (Arrow IPC), ``.npy`` or ``.mat``.
    H : complex [n, n_rx, n_tx] or [n, n_sc, n_rx, n_tx]
    task_ids : int [n], optional
        Only for Arrow / Parquet (column ``task_id``).
    variable : str, default "H"
        Variable name in a ``.mat`` file.

    Returns
    -------
    Path
        The written file.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        pq.write_table(channels_to_table(H, task_ids), p)
    elif suffix in _ARROW_SUFFIXES:
        feather.write_feather(channels_to_table(H, task_ids), p, compression="uncompressed")
    elif suffix in (".npy", ".mat"):
        if task_ids is not None:
            raise ValueError("task_ids can only be stored in Arrow / Parquet files")
        h = H.detach().cpu().numpy() if isinstance(H, torch.Tensor) else np.asarray(H)
        if not np.iscomplexobj(h) or h.ndim not in (3, 4):
            raise ValueError(f"expected complex H [n, n_rx, n_tx] or [n, n_sc, n_rx, n_tx], got {h.dtype} {h.shape}")
        if suffix == ".npy":
            np.save(p, h.astype(np.complex64))
        else:
            import scipy.io

            scipy.io.savemat(p, {variable: h.astype(np.complex64)})
    else:
        raise ValueError(f"{p}: unsupported suffix {suffix!r}; expected one of {list(_SUFFIXES)}")
    return p


def _reorder(h: np.ndarray, axes: str | None, where: str) -> np.ndarray:
    """Complex array with named axes -> ``[n, (sc,) rx, tx]``."""
    if not np.iscomplexobj(h):
        named = len(axes) if axes is not None else None
        if (
            np.issubdtype(h.dtype, np.floating)
            and h.shape[-1:] == (2,)
            and (h.ndim - 1 == named if named is not None else h.ndim - 1 in (3, 4))
        ):
            h = h[..., 0] + 1j * h[..., 1]
        else:
            raise ValueError(
                f"{where}: expected a complex array (or a real one with a trailing (real, imag) axis of size 2), got {h.dtype} {h.shape}"
            )
    if axes is None:
        axes = {3: "nrt", 4: "ncrt"}.get(h.ndim)
        if axes is None:
            raise ValueError(f"{where}: expected 3 axes (n, rx, tx) or 4 (n, sc, rx, tx), got shape {h.shape}")
    if len(axes) != h.ndim or len(set(axes)) != len(axes) or not set(axes) <= set("ncrt") or not {"n", "r", "t"} <= set(axes):
        raise ValueError(f"{where}: axes {axes!r} must name each array axis once with letters n, c, r, t (n, r, t required); array shape {h.shape}")
    target = "ncrt" if "c" in axes else "nrt"
    return np.transpose(h, [axes.index(a) for a in target])


def read_channels(path: str | os.PathLike[str], variable: str = "H", axes: str | None = None) -> tuple[torch.Tensor, np.ndarray | None]:
    """Load channels from a file in one of the documented layouts.

    Parameters
    ----------
    path : path-like
        ``.parquet``, ``.arrow`` / ``.feather``, ``.npy`` or ``.mat``.
    variable : str, default "H"
        Variable to read from a ``.mat`` file.
    axes : str, optional
        Axis names of an ``.npy`` / ``.mat`` array (letters n, c, r, t); default
        ``"nrt"`` or ``"ncrt"`` by rank.

    Returns
    -------
    H : torch.Tensor
        ``complex64 [n, n_rx, n_tx]`` or ``[n, n_sc, n_rx, n_tx]``.
    task_ids : np.ndarray or None
        ``int64 [n]`` from an Arrow / Parquet ``task_id`` column.
    """
    p = Path(path)
    where = str(p)
    suffix = p.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"{where}: unsupported suffix {suffix!r}; expected one of {list(_SUFFIXES)}")
    if not p.is_file():
        raise ValueError(f"{where}: no such file")
    try:
        if suffix == ".parquet":
            return table_to_channels(pq.read_table(p), where)
        if suffix in _ARROW_SUFFIXES:
            return table_to_channels(feather.read_table(p), where)
        if suffix == ".npy":
            h = np.load(p, allow_pickle=False)
        else:
            import scipy.io

            try:
                mat = scipy.io.loadmat(p)
            except NotImplementedError as e:  # MATLAB v7.3 (HDF5)
                raise ValueError(f"{where}: MATLAB v7.3 files are not supported; save with -v7") from e
            if variable not in mat:
                names = sorted(k for k in mat if not k.startswith("__"))
                raise ValueError(f"{where}: variable {variable!r} not found; the file holds {names}")
            h = np.asarray(mat[variable])
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise ValueError(f"{where}: cannot read channels ({e})") from e
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"{where}: cannot read channels ({e})") from e
    h = _reorder(h, axes, where)
    if not np.all(np.isfinite(h)):
        raise ValueError(f"{where}: the channels contain NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(h, dtype=np.complex64)), None


_LOADED: OrderedDict[tuple[object, ...], tuple[torch.Tensor, np.ndarray | None]] = OrderedDict()


def _load(path: str, variable: str, axes: str | None) -> tuple[torch.Tensor, np.ndarray | None]:
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_mtime_ns, st.st_size, variable, axes)
    if key not in _LOADED:
        _LOADED[key] = read_channels(path, variable, axes)
        while len(_LOADED) > 4:
            _LOADED.popitem(last=False)
    return _LOADED[key]


@register_source("imported")
def imported(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> torch.Tensor:
    """``n`` channels drawn from a file (see module docstring and docs/channel_import.md).

    Task options (defaults)
    -----------------------
    path (required): the file.
    variable ("H"): variable name in a ``.mat`` file.
    axes (by rank): axis letters of an ``.npy`` / ``.mat`` array.
    filter_task_id (True): if the file has a ``task_id`` column, use only the rows of
        ``task.task_id``.
    subcarrier (n_sc // 2): which subcarrier a narrowband request takes from a
        wideband file.
    replace (False): draw with replacement (needed when ``n`` exceeds the file's rows).
    normalise ("file"): ``"file"`` scales by one constant so the mean ``|h|^2`` over all
        of the task's rows in the file is 1 (independent of ``n`` and ``seed``);
        ``"none"`` keeps the file's values.

    ``seed`` (with ``task.task_id``) picks which rows are drawn.

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``.
    """
    path = task.option("path")
    if not path:
        raise ValueError("the 'imported' source needs the task option 'path'")
    H, tid = _load(str(path), str(task.option("variable", "H")), task.option("axes"))
    where = str(path)
    if tid is not None and bool(task.option("filter_task_id", True)):
        H = H[torch.from_numpy(tid == task.task_id)]
        if H.shape[0] == 0:
            raise ValueError(f"{where}: no rows with task_id == {task.task_id} (file has {sorted(set(tid.tolist()))})")
    if (H.shape[-2], H.shape[-1]) != (task.n_rx, task.n_tx):
        raise ValueError(f"{where}: channels are {H.shape[-2]}x{H.shape[-1]} (n_rx x n_tx), the task asks {task.n_rx}x{task.n_tx}")
    if n_subcarriers is None:
        if H.ndim == 4:
            k = int(task.option("subcarrier", H.shape[1] // 2))
            if not 0 <= k < H.shape[1]:
                raise ValueError(f"{where}: subcarrier {k} out of range for {H.shape[1]} subcarriers")
            H = H[:, k]
    elif H.ndim == 3:
        raise ValueError(f"{where}: the file is narrowband; {n_subcarriers} subcarriers were requested")
    elif H.shape[1] != n_subcarriers:
        raise ValueError(f"{where}: the file has {H.shape[1]} subcarriers; {n_subcarriers} were requested")
    mode = str(task.option("normalise", "file"))
    if mode == "file":
        power = H.abs().pow(2).mean()
        if power <= 0:
            raise ValueError(f"{where}: the channels are all zero")
        scale = power.rsqrt()
    elif mode == "none":
        scale = torch.tensor(1.0)
    else:
        raise ValueError(f"normalise must be 'file' or 'none', got {mode!r}")
    total = H.shape[0]
    rng = numpy_rng(seed, "imported-rows", task.task_id)
    if bool(task.option("replace", False)):
        rows = rng.integers(0, total, n)
    elif n <= total:
        rows = rng.permutation(total)[:n]
    else:
        raise ValueError(f"{where}: {n} samples requested but the task has {total} rows (set option replace=True)")
    return (H[torch.from_numpy(rows)] * scale).to(torch.complex64)
