"""Task geometry shared by the geometric sources: BS position, UE circle, UE draws.

The learngene paper's Table II: BS at (0, 0, 15) m; a task is a circle of radius 5 m
centred at (x, y, 1.5) m with 50 m < sqrt(x^2 + y^2) < 100 m; UEs are uniform in it.
The centre derives from ``derive_seed(task.seed, "task-centre", task.task_id)``; the UE
draws inside it derive from the per-call ``seed``.

Task options (defaults): ``bs_height_m`` (15.0), ``ue_height_m`` (1.5), ``radius_m``
(5.0), ``min_distance_m`` (50.0), ``max_distance_m`` (100.0).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from common.channels.base import ChannelTask
from common.seeding import numpy_rng

__all__ = ["bs_position_m", "task_centre_m", "ue_drops_m", "ue_positions_m"]


def bs_position_m(task: ChannelTask) -> np.ndarray:
    """BS array reference point, ``float64 [3]`` in metres: ``(0, 0, bs_height_m)``."""
    return np.array([0.0, 0.0, float(task.option("bs_height_m", 15.0))])


def task_centre_m(task: ChannelTask) -> np.ndarray:
    """Centre of the task's UE circle, ``float64 [3]`` in metres (see :func:`_task_centre_m`)."""
    return np.array(_task_centre_m(task))


@lru_cache(maxsize=4096)
def _task_centre_m(task: ChannelTask) -> tuple[float, float, float]:
    """Centre of the task's UE circle, ``float64 [3]`` in metres.

    Uniform (by area) in the annulus ``min_distance_m < r < max_distance_m`` around
    the BS, at height ``ue_height_m``; drawn from ``derive_seed(task.seed,
    "task-centre", task.task_id)``.
    """
    r_min = float(task.option("min_distance_m", 50.0))
    r_max = float(task.option("max_distance_m", 100.0))
    if not 0 <= r_min < r_max:
        raise ValueError(f"expected 0 <= min_distance_m < max_distance_m, got {r_min}, {r_max}")
    rng = numpy_rng(task.seed, "task-centre", task.task_id)
    u, phi = rng.random(2)
    r = np.sqrt(r_min**2 + u * (r_max**2 - r_min**2))
    # keep the centre strictly inside the open annulus
    r = float(np.clip(r, np.nextafter(r_min, r_max), np.nextafter(r_max, r_min)))
    return (r * float(np.cos(2 * np.pi * phi)), r * float(np.sin(2 * np.pi * phi)), float(task.option("ue_height_m", 1.5)))


def ue_positions_m(task: ChannelTask, n: int, seed: int) -> np.ndarray:
    """``n`` UE positions uniform in the task's circle, ``float64 [n, 3]`` in metres.

    Parameters
    ----------
    task : ChannelTask
        Fixes the circle (centre, ``radius_m``).
    n : int
        Number of UEs.
    seed : int
        Picks the draw inside the circle (with ``task.seed`` and ``task.task_id``).
    """
    rng = numpy_rng(seed, "ue-positions", task.seed, task.task_id)
    return _in_circle(task, rng.random((n, 2)))  # row by row: the first k of n draws equal a draw of k


def ue_drops_m(task: ChannelTask, seeds: list[int]) -> np.ndarray:
    """One UE per seed, uniform in the task's circle: ``float64 [len(seeds), 3]`` (m).

    Each drop is a stateless function of its own seed (a ``derive_seed`` value: 63 hashed
    bits): the low 31 bits give ``u`` and the next 32 bits ``v``, ``r = radius_m sqrt(u)``,
    ``phi = 2 pi v``. No generator per UE, so a fleet of drops costs one hash each (a
    generator's seeding alone is ~10 us).
    """
    s = np.asarray(seeds, dtype=np.uint64).reshape(-1)
    u = (s & np.uint64(0x7FFFFFFF)).astype(np.float64) / 2.0**31
    v = (s >> np.uint64(31)).astype(np.float64) / 2.0**32
    return _in_circle(task, np.stack([u, v], axis=1))


def _in_circle(task: ChannelTask, u: np.ndarray) -> np.ndarray:
    """Points of the task's circle from uniforms ``u: float64 [n, 2]`` in [0, 1): radius
    ``radius_m sqrt(u[:, 0])`` (uniform by area), angle ``2 pi u[:, 1]``; ``float64 [n, 3]``."""
    radius = float(task.option("radius_m", 5.0))
    if radius < 0:
        raise ValueError(f"radius_m must be >= 0, got {radius}")
    r = radius * np.sqrt(u[:, 0])
    phi = 2 * np.pi * u[:, 1]
    pos = np.repeat(task_centre_m(task)[None, :], u.shape[0], axis=0)
    pos[:, 0] += r * np.cos(phi)
    pos[:, 1] += r * np.sin(phi)
    return pos
