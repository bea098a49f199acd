"""Antenna array geometry and plane-wave steering vectors (ULA / UPA).

Element positions are expressed in metres in the array's local frame and then placed
in the global frame. Steering vectors follow the 3GPP TR 38.901 convention (eq. 7.5-22):
the response of element ``m`` at position ``d_m`` to a plane wave leaving / arriving
along the unit vector ``r`` is ``exp(+j 2 pi r . d_m / lambda)``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from common.channels.base import ChannelTask

__all__ = [
    "SPEED_OF_LIGHT",
    "ula_positions",
    "upa_positions",
    "default_upa_rows",
    "array_positions",
    "task_array_positions",
    "unit_vectors",
    "steering_vectors",
    "steering_vectors_torch",
]

SPEED_OF_LIGHT = 299_792_458.0  # m/s


def ula_positions(n: int, spacing_m: float, axis: str = "y") -> np.ndarray:
    """Element positions of a uniform linear array, centred on the origin.

    Parameters
    ----------
    n : int
        Number of elements (>= 1).
    spacing_m : float
        Element spacing in metres (> 0).
    axis : {"x", "y", "z"}, default "y"
        Axis the array lies along.

    Returns
    -------
    np.ndarray
        ``float64 [n, 3]`` positions in metres.
    """
    if n < 1:
        raise ValueError(f"a ULA needs at least 1 element, got {n}")
    if spacing_m <= 0:
        raise ValueError(f"element spacing must be positive, got {spacing_m} m")
    if axis not in ("x", "y", "z"):
        raise ValueError(f"axis must be 'x', 'y' or 'z', got {axis!r}")
    pos = np.zeros((n, 3))
    pos[:, "xyz".index(axis)] = (np.arange(n) - (n - 1) / 2) * spacing_m
    return pos


def upa_positions(n_rows: int, n_cols: int, spacing_m: float, plane: str = "yz") -> np.ndarray:
    """Element positions of a uniform planar array, centred on the origin.

    Rows run along the second axis of ``plane`` (vertical for ``"yz"``), columns
    along the first; element ``m = row * n_cols + col``.

    Parameters
    ----------
    n_rows, n_cols : int
        Array size (each >= 1).
    spacing_m : float
        Element spacing in metres, both directions.
    plane : {"yz", "xy", "xz"}, default "yz"
        Plane of the array (``"yz"``: a panel facing the x axis).

    Returns
    -------
    np.ndarray
        ``float64 [n_rows * n_cols, 3]`` positions in metres.
    """
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"a UPA needs at least 1x1 elements, got {n_rows}x{n_cols}")
    if spacing_m <= 0:
        raise ValueError(f"element spacing must be positive, got {spacing_m} m")
    if plane not in ("yz", "xy", "xz"):
        raise ValueError(f"plane must be 'yz', 'xy' or 'xz', got {plane!r}")
    col_axis, row_axis = "xyz".index(plane[0]), "xyz".index(plane[1])
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    pos = np.zeros((n_rows * n_cols, 3))
    pos[:, col_axis] = (cols.ravel() - (n_cols - 1) / 2) * spacing_m
    pos[:, row_axis] = (rows.ravel() - (n_rows - 1) / 2) * spacing_m
    return pos


def default_upa_rows(n: int) -> int:
    """UPA rows for ``n`` elements: the largest divisor of ``n`` not above ``sqrt(n)`` (32 -> 4)."""
    if n < 1:
        raise ValueError(f"an array needs at least 1 element, got {n}")
    return max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)


def array_positions(
    kind: str, n: int, wavelength_m: float, spacing_wl: float = 0.5, rows: int | None = None, orientation: str = "y"
) -> np.ndarray:
    """Positions of an ``n``-element ULA or UPA.

    Parameters
    ----------
    kind : {"ula", "upa"}
        Array type.
    n : int
        Total number of elements.
    wavelength_m : float
        Carrier wavelength in metres.
    spacing_wl : float, default 0.5
        Element spacing in wavelengths (half-wavelength by default).
    rows : int, optional
        UPA rows; must divide ``n``. Default: the largest divisor of ``n`` not above
        ``sqrt(n)`` (32 -> 4 x 8).
    orientation : str, default "y"
        ULA axis (``"x"``, ``"y"``, ``"z"``) or UPA plane (``"yz"``, ``"xy"``, ``"xz"``;
        a ULA orientation letter ``a`` maps to the UPA plane ``"a" + "z"``).

    Returns
    -------
    np.ndarray
        ``float64 [n, 3]`` element positions in metres.
    """
    spacing_m = spacing_wl * wavelength_m
    if kind == "ula":
        return ula_positions(n, spacing_m, orientation[0])
    if kind == "upa":
        if rows is None:
            rows = default_upa_rows(n)
        if rows < 1 or n % rows:
            raise ValueError(f"UPA rows={rows} must divide the element count {n}")
        plane = orientation if len(orientation) == 2 else orientation + "z"
        if plane == "zz":
            raise ValueError("a UPA cannot lie along 'z' alone; give a plane like 'yz'")
        return upa_positions(rows, n // rows, spacing_m, plane)
    raise ValueError(f"array kind must be 'ula' or 'upa', got {kind!r}")


def task_array_positions(task: ChannelTask, wavelength_m: float) -> tuple[np.ndarray, np.ndarray]:
    """BS (receive) and UE (transmit) element positions from a task's options.

    Task options (defaults): ``bs_array`` ("upa"), ``bs_rows`` (auto, 4 for 32),
    ``bs_spacing_wl`` (0.5), ``bs_orientation`` ("yz": a panel facing +x);
    ``ue_array`` ("ula"), ``ue_rows`` (auto), ``ue_spacing_wl`` (0.5),
    ``ue_orientation`` ("x").

    Returns
    -------
    bs_pos, ue_pos : np.ndarray
        ``float64 [n_rx, 3]`` and ``float64 [n_tx, 3]`` positions in metres, relative to
        each array's reference point.
    """
    def side(prefix: str, n: int, kind: str, orientation: str) -> np.ndarray:
        return array_positions(
            str(task.option(f"{prefix}_array", kind)),
            n,
            wavelength_m,
            float(task.option(f"{prefix}_spacing_wl", 0.5)),
            task.option(f"{prefix}_rows"),
            str(task.option(f"{prefix}_orientation", orientation)),
        )

    return side("bs", task.n_rx, "upa", "yz"), side("ue", task.n_tx, "ula", "x")


def unit_vectors(zenith_rad: np.ndarray, azimuth_rad: np.ndarray) -> np.ndarray:
    """Unit direction vectors ``(sin z cos a, sin z sin a, cos z)``.

    Parameters
    ----------
    zenith_rad, azimuth_rad : np.ndarray
        Angles in radians, any broadcastable shapes ``[...]``.

    Returns
    -------
    np.ndarray
        ``float64 [..., 3]``.
    """
    z, a = np.broadcast_arrays(np.asarray(zenith_rad, float), np.asarray(azimuth_rad, float))
    return np.stack([np.sin(z) * np.cos(a), np.sin(z) * np.sin(a), np.cos(z)], axis=-1)


def steering_vectors(directions: np.ndarray, positions_m: np.ndarray, wavelength_m: float) -> np.ndarray:
    """Plane-wave array responses ``exp(j 2 pi r . d_m / lambda)`` (TR 38.901 eq. 7.5-22).

    Parameters
    ----------
    directions : np.ndarray
        ``float [..., 3]`` unit vectors pointing from the array towards the far end.
    positions_m : np.ndarray
        ``float [n_ant, 3]`` element positions in metres.
    wavelength_m : float
        Carrier wavelength in metres.

    Returns
    -------
    np.ndarray
        ``complex128 [..., n_ant]``.
    """
    if directions.shape[-1] != 3 or positions_m.ndim != 2 or positions_m.shape[1] != 3:
        raise ValueError(
            f"expected directions [..., 3] and positions [n_ant, 3], got {directions.shape} and {positions_m.shape}"
        )
    return np.exp(2j * np.pi / wavelength_m * (directions @ positions_m.T))


def steering_vectors_torch(directions: torch.Tensor, positions_m: torch.Tensor | np.ndarray, wavelength_m: float) -> torch.Tensor:
    """``steering_vectors`` in torch, exploiting the array's lattice (fast path).

    ``exp(j k r . d_m)`` factorises over the axes, so only one phasor per distinct
    element coordinate per axis is evaluated (8 + 4 for a 4 x 8 UPA instead of 32),
    with ``cos`` / ``sin`` rather than a complex ``exp``.

    Parameters
    ----------
    directions : torch.Tensor
        ``float [..., 3]`` unit vectors from the array towards the far end.
    positions_m : torch.Tensor or np.ndarray
        ``float [n_ant, 3]`` element positions, m.
    wavelength_m : float
        Carrier wavelength, m.

    Returns
    -------
    torch.Tensor
        ``complex64 [..., n_ant]`` (``complex128`` for float64 ``directions``).
    """
    pos = torch.as_tensor(positions_m, dtype=directions.dtype)
    if directions.shape[-1] != 3 or pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"expected directions [..., 3] and positions [n_ant, 3], got {tuple(directions.shape)} and {tuple(pos.shape)}")
    k = 2 * np.pi / wavelength_m
    out: torch.Tensor | None = None
    for axis in range(3):
        uniq, inv = torch.unique(pos[:, axis], return_inverse=True)
        if uniq.numel() == 1 and float(uniq[0]) == 0.0:
            continue
        ph = k * directions[..., axis : axis + 1] * uniq  # [..., n_unique]
        f = torch.complex(torch.cos(ph), torch.sin(ph))[..., inv]
        out = f if out is None else out * f
    if out is None:
        return torch.ones((*directions.shape[:-1], pos.shape[0]), dtype=torch.complex64 if directions.dtype != torch.float64 else torch.complex128)
    return out
