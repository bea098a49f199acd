"""A simulated device's own flash: the state it keeps between rounds, on disk.

A device keeps a flat ``dict[str, np.ndarray]`` between rounds (``clients.device``: the
unit it inherited, its detector, each stage's state). In a Flower simulation that lives in
the engine's memory and dies with the run, so after every round it takes part in, a device
also writes it to ``$AIRFLEET_DEVICE_STATE_DIR/device-<id>/round-<r>.npz`` (atomically:
a temporary file and a rename; never pickled). ``airfleet run`` points the variable at
``RUN_DIR/device_state`` before Ray starts its workers; on ``--resume`` it also sets
``$AIRFLEET_RESUME_ROUND`` to the last round the base station completed, and each device
reads back the newest state it wrote at or before that round when it registers.

The two newest files of a device are kept: the base station's checkpoint lags a device's
newest write by at most one round (the round in flight when the run stopped).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from common.npz_files import read_npz, write_npz

__all__ = ["STATE_DIR_ENV", "RESUME_ROUND_ENV", "state_dir", "resume_round", "save_device_state", "load_device_state"]

#: where devices keep their state between rounds (unset: in memory only, as Flower does)
STATE_DIR_ENV = "AIRFLEET_DEVICE_STATE_DIR"
#: the last round the base station completed, when a run resumes (unset or 0: a fresh run)
RESUME_ROUND_ENV = "AIRFLEET_RESUME_ROUND"

_KEEP = 2


def state_dir() -> Path | None:
    """``$AIRFLEET_DEVICE_STATE_DIR``, or None."""
    d = os.environ.get(STATE_DIR_ENV, "")
    return Path(d) if d else None


def resume_round() -> int:
    """``$AIRFLEET_RESUME_ROUND`` (0 when unset)."""
    try:
        return max(0, int(os.environ.get(RESUME_ROUND_ENV, "0") or 0))
    except ValueError:
        return 0


def _rounds(folder: Path) -> list[tuple[int, Path]]:
    out = []
    for p in folder.glob("round-*.npz") if folder.is_dir() else []:
        try:
            out.append((int(p.stem.split("-", 1)[1]), p))
        except ValueError:
            continue
    return sorted(out)


def save_device_state(root: Path, device_id: int, round_: int, state: dict[str, np.ndarray]) -> None:
    """Write device ``device_id``'s state after ``round_``; keep its two newest files.

    Parameters
    ----------
    root : Path
        The state directory (``$AIRFLEET_DEVICE_STATE_DIR``).
    device_id : int
        Fleet-wide device index.
    round_ : int
        The round the state is the outcome of.
    state : dict of str -> np.ndarray
        What the device keeps (any dtype but object).
    """
    folder = Path(root) / f"device-{int(device_id)}"
    write_npz(folder / f"round-{int(round_):05d}.npz", state)
    for _, p in _rounds(folder)[:-_KEEP]:
        p.unlink(missing_ok=True)


def load_device_state(root: Path, device_id: int, up_to_round: int) -> dict[str, np.ndarray]:
    """The newest state device ``device_id`` wrote at or before ``up_to_round`` (empty if
    none); files of later rounds (a round that did not complete) are removed.

    Raises
    ------
    ValueError
        The file is damaged (one line naming it); a device never starts from half a state.
    """
    folder = Path(root) / f"device-{int(device_id)}"
    best: Path | None = None
    for r, p in _rounds(folder):
        if r <= up_to_round:
            best = p
        else:
            p.unlink(missing_ok=True)
    if best is None:
        return {}
    try:
        return read_npz(best)[0]
    except ValueError as e:
        raise ValueError(f"damaged device state: {e}") from None
