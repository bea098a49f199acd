"""Named NumPy arrays with a JSON header in one ``.npz`` file, written atomically.

The run's checkpoints (the base station's ``checkpoint.npz``, a device's kept state, a
study's completed units of work) are each one such file: a temporary file in the same
folder renamed into place, so a run killed at any instant leaves the old file or the new
one, never half of one. Read with ``allow_pickle=False``: nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["write_npz", "read_npz", "model_arrays", "load_model_arrays"]

_JSON = "__json__"


def write_npz(path: str | os.PathLike[str], arrays: dict[str, np.ndarray], header: Any = None) -> None:
    """Write ``arrays`` (and a JSON-able ``header``, NaN allowed) to ``path`` atomically.

    Raises
    ------
    OSError
        The folder cannot be created or written (nothing is left behind).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)  # key order kept: rows rebuild the same tables
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_JSON: blob}, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_npz(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], Any]:
    """``(arrays, header)`` of a :func:`write_npz` file.

    Raises
    ------
    ValueError
        The file is damaged or not such a file (one line naming it).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(arrays.pop(_JSON).tobytes().decode()) if _JSON in arrays else None
    except Exception as e:  # noqa: BLE001 - any damage is one line
        raise ValueError(f"{path}: damaged file ({type(e).__name__}: {e})") from e
    return arrays, header


def model_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    """A model's weights and buffers as NumPy arrays (copies on the CPU: a snapshot that
    later training does not change), the arrays a checkpoint keeps."""
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def load_model_arrays(model: nn.Module, arrays: dict[str, np.ndarray]) -> None:
    """Put :func:`model_arrays` back into ``model`` (same architecture), bit for bit."""
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
