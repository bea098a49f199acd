"""The ``gbsm`` model calibrated to TR 38.901 UMi street canyon NLoS (``model = "38.901"``).

A task is one *environment* shared by all its UEs (as a QuaDRiGa task is): a square
lattice of *drops* with spacing ``D`` = the 15 m correlation distance of cluster-specific
random variables (TR 38.901 Table 7.6.3.1-2), drop ``(0, 0)`` at the task's centre.
Each drop owns one 38.901 cluster set drawn at its reference point ``x_d`` (the lattice
point at UE height):

- large-scale parameters (DS, ASD, ASA, ZSA, ZSD) of Table 7.5-6 Part-1 / 7.5-8 at the
  task's carrier and ``x_d``'s BS distance, cross-correlated per Table 7.5-6 and
  spatially correlated between drops: each is a random field with the table's
  correlation distance (Sec. 7.6.3.1; ``spatial_consistency.ExponentialField``);
- 19 clusters x 20 rays per Sec. 7.5 steps 5-11 (``tr38901_clusters``): delays with
  ``r_tau``, powers eq. (7.5-5)-(7.5-6) with per-cluster shadowing, angles around the
  LoS directions with the cluster spreads ``c_ASD``, ``c_ASA``, ``c_ZSA`` and the ray
  offsets of Table 7.5-3, sub-clusters of Table 7.5-5.

Geometry that realises the angles and delays at ``x_d``: every ray leaves the BS along
its (AoD, ZoD) and reaches the UE from a last-bounce scatterer placed along its
(AoA, ZoA) at the distance where a single bounce would give the cluster's excess delay
(``d = (L^2 - d0^2) / (2 (L - r . v))``, ``L = d0 + c tau_n``, ``v`` = UE->BS), at least
the drop's visibility radius + 1 m so no UE in view stands among them. The BS side of a
ray is fixed; its UE side follows the geometry (``paths.PathEnvironment``): a UE at
``x != x_d`` sees the same scatterers from slightly different angles and delays, so the
UEs of a task have correlated channels and a short move changes the channel smoothly.

Cluster birth and death: a position sees the drop it is in with power weight 1 on a
plateau of half-width ``(D - T) / 2`` (5 m = the task radius by default, so every UE of a
task sees exactly the centre drop's 19 clusters) and fades to the neighbouring drops
over a ``T`` = 5 m transition band with ``cos^2`` / ``sin^2`` power ramps
(``spatial_consistency.lattice_weights``): along a long track the cluster set changes
every ``D`` metres, smoothly. Per drop the ray powers sum to 1 and the weights to 1, so
``E[|h_ij|^2] = 1`` everywhere; path loss and shadow fading are applied elsewhere (the
radio model).

Calibration: ``tests/test_channels_gbsm_umi.py`` checks the generated distributions
against the tables (Kolmogorov-Smirnov, as Sionna's tr38901 tests do);
``benchmarks/gbsm_calibration.py`` prints generated vs 38.901 statistics, ZF / MMSE SER
per task and the correlation along tracks, and writes them into
``docs/channel_model.md``.

Not modelled: LoS (this is the NLoS table), polarisation (step 9: single-polarised
isotropic elements), blockage, the absolute time of arrival (Sec. 7.6.9: delays are
excess delays).

Task options (defaults): carrier_hz (6e9), subcarrier_spacing_hz (30e3),
cluster_spacing_m (15.0), transition_m (5.0), ue_rotation ("fixed"), bs_facing
("sector": the panel of the 38.901 site's sector that serves the task, TR 38.901
Sec. 7.8 / Table 7.8-1: 3 sectors per site with boresights at 30, 150 and 270 deg, the
task served by the one nearest its centre's azimuth, so the task is within 60 deg of
boresight; "task": rotated about z so that boresight (+x) points at the task's centre;
"fixed": the BS array as ``arrays.task_array_positions`` places it, boresight +x for
every task, so tasks near +-y see an end-fire array), the layout's
bs_height_m, ue_height_m, radius_m, min/max_distance_m and the arrays of
``arrays.task_array_positions``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from common.channels.arrays import SPEED_OF_LIGHT, task_array_positions, unit_vectors
from common.channels.base import ChannelTask
from common.channels.layout import bs_position_m, task_centre_m
from common.channels.paths import PathEnvironment, channels_at, checked_positions, rotate_z
from common.channels.spatial_consistency import ExponentialField, lattice_weights
from common.channels.tr38901_clusters import ClusterSet, LargeScaleParameters, LosDirections, draw_clusters, large_scale_parameters
from common.channels.tr38901_umi import LSP_NAMES, UMI_NLOS, UMI_NLOS_CORRELATION_DISTANCE_M
from common.seeding import numpy_rng

__all__ = ["UmiEnvironment", "LEGACY_ONLY_OPTIONS", "BS_FACINGS", "SECTOR_BORESIGHTS_DEG", "bs_boresight_rad"]

#: values of the ``bs_facing`` option, the default first
BS_FACINGS = ("sector", "task", "fixed")

#: boresight azimuths of a 38.901 site's three sectors, degrees (TR 38.901 Table 7.8-1)
SECTOR_BORESIGHTS_DEG = (30.0, 150.0, 270.0)

#: options of the legacy geometry that have no meaning in the calibrated model
LEGACY_ONLY_OPTIONS = (
    "n_clusters",
    "rays_per_cluster",
    "cluster_spread_m",
    "cluster_min_distance_m",
    "cluster_max_distance_m",
    "cluster_height_m",
    "delay_decay_ns",
    "shadowing_db",
    "los",
    "k_factor_db",
)


def bs_boresight_rad(centre_m: np.ndarray, facing: str) -> float:
    """Azimuth (rad) the BS panel's boresight points to for a task centred at ``centre_m``.

    ``"task"``: the centre's azimuth; ``"sector"``: the boresight of
    ``SECTOR_BORESIGHTS_DEG`` nearest to it (the sector that serves the task, at most
    60 deg off); ``"fixed"``: 0 (+x).
    """
    if facing == "fixed":
        return 0.0
    azimuth = math.atan2(float(centre_m[1]), float(centre_m[0]))
    if facing == "task":
        return azimuth
    boresights = np.radians(SECTOR_BORESIGHTS_DEG)
    off = np.angle(np.exp(1j * (azimuth - boresights)))
    return float(boresights[int(np.argmin(np.abs(off)))])


class UmiEnvironment:
    """A task's 38.901 UMi NLoS environment: a lattice of drops, each a cluster set.

    Parameters
    ----------
    task : ChannelTask
        A ``"gbsm"`` task; ``(task.seed, task.task_id)`` fixes every draw.

    Raises
    ------
    ValueError
        On a legacy-only option or an invalid value, naming the option.
    """

    def __init__(self, task: ChannelTask) -> None:
        for key in LEGACY_ONLY_OPTIONS:
            if task.option(key) is not None:
                raise ValueError(
                    f"channels option {key!r} belongs to model = 'legacy'; the 38.901 model has "
                    f"{UMI_NLOS.n_clusters} clusters x {UMI_NLOS.rays_per_cluster} rays of TR 38.901 Table 7.5-6 (NLoS)"
                )
        self.task = task
        self.carrier_hz = float(task.option("carrier_hz", 6e9))
        if not self.carrier_hz > 0:
            raise ValueError(f"channels option 'carrier_hz' must be positive, got {self.carrier_hz}")
        self.wavelength_m = SPEED_OF_LIGHT / self.carrier_hz
        self.spacing_m = float(task.option("cluster_spacing_m", UMI_NLOS.cluster_correlation_distance_m))
        self.transition_m = float(task.option("transition_m", UMI_NLOS.cluster_correlation_distance_m / 3))
        if not self.spacing_m > 0:
            raise ValueError(f"channels option 'cluster_spacing_m' must be positive, got {self.spacing_m}")
        if not 0 < self.transition_m <= self.spacing_m:
            raise ValueError(f"channels option 'transition_m' must be in (0, cluster_spacing_m], got {self.transition_m}")
        self.centre_m = task_centre_m(task)
        self.bs_position_m = bs_position_m(task)
        self.bs_antennas_m, self.ue_antennas_m = task_array_positions(task, self.wavelength_m)
        facing = str(task.option("bs_facing", "sector"))
        if facing not in BS_FACINGS:
            raise ValueError(f"channels option 'bs_facing' must be one of {BS_FACINGS}, got {facing!r}")
        if facing != "fixed":
            self.bs_antennas_m = rotate_z(self.bs_antennas_m, np.array([bs_boresight_rad(self.centre_m, facing)]))[0]
        # a drop is seen up to (D + T) / 2 along each axis: its scatterers stay beyond that
        self.min_scatterer_distance_m = math.sqrt(2.0) * (self.spacing_m + self.transition_m) / 2.0 + 1.0
        self.fields = tuple(
            ExponentialField(numpy_rng(task.seed, "gbsm-umi-lsp-field", task.task_id, name), UMI_NLOS_CORRELATION_DISTANCE_M[name])
            for name in LSP_NAMES
        )
        self._drops: dict[tuple[int, int], PathEnvironment] = {}

    def drop_position_m(self, i: int, j: int) -> np.ndarray:
        """Reference point of drop ``(i, j)``, ``float64 [3]`` m (at UE height)."""
        return self.centre_m + np.array([i * self.spacing_m, j * self.spacing_m, 0.0])

    def los_directions(self, position_m: np.ndarray) -> LosDirections:
        """LoS directions (degrees) of a UE at ``position_m`` (arrival) and of the BS (departure)."""
        v = self.bs_position_m - position_m  # UE -> BS
        zen = math.degrees(math.acos(v[2] / np.linalg.norm(v)))
        az = math.degrees(math.atan2(v[1], v[0]))
        return LosDirections(aoa_deg=az, zoa_deg=zen, aod_deg=az + 180.0, zod_deg=180.0 - zen)

    def large_scale_parameters(self, i: int, j: int) -> LargeScaleParameters:
        """Step 4 at drop ``(i, j)``: the LSP fields there, mixed per Table 7.5-6."""
        x = self.drop_position_m(i, j)
        normals = np.array([f(x[:2]) for f in self.fields])
        d2d = float(np.hypot(*(x[:2] - self.bs_position_m[:2])))
        return large_scale_parameters(normals, self.carrier_hz, d2d, float(x[2]), float(self.bs_position_m[2]))

    def clusters(self, i: int, j: int) -> ClusterSet:
        """The 38.901 clusters and rays of drop ``(i, j)`` at its reference point."""
        x = self.drop_position_m(i, j)
        rng = numpy_rng(self.task.seed, "gbsm-umi-drop", self.task.task_id, i, j)
        return draw_clusters(rng, self.large_scale_parameters(i, j), self.los_directions(x))

    def drop(self, i: int, j: int) -> PathEnvironment:
        """Drop ``(i, j)`` as fixed paths: BS departures and last-bounce scatterers (module docstring)."""
        key = (int(i), int(j))
        if key not in self._drops:
            self._drops[key] = self._build_drop(*key)
        return self._drops[key]

    def _build_drop(self, i: int, j: int) -> PathEnvironment:
        x = self.drop_position_m(i, j)
        cs = self.clusters(i, j)
        keep = cs.ray_powers.ravel() > 0
        r_ue = unit_vectors(np.radians(cs.zoa_deg), np.radians(cs.aoa_deg)).reshape(-1, 3)[keep]
        r_bs = unit_vectors(np.radians(cs.zod_deg), np.radians(cs.aod_deg)).reshape(-1, 3)[keep]
        v = self.bs_position_m - x
        d0 = float(np.linalg.norm(v))
        n_rays = cs.ray_powers.shape[1]
        path_len = d0 + SPEED_OF_LIGHT * np.repeat(cs.cluster_delays_s, n_rays)[keep]
        # single-bounce distance on the delay ellipse; floored (tau = 0, or a ray towards the BS)
        denom = np.maximum(2.0 * (path_len - r_ue @ v), 1e-9)
        d = np.maximum((path_len**2 - d0**2) / denom, self.min_scatterer_distance_m)
        return PathEnvironment(
            carrier_hz=self.carrier_hz,
            wavelength_m=self.wavelength_m,
            bs_position_m=self.bs_position_m,
            bs_antennas_m=self.bs_antennas_m,
            ue_antennas_m=self.ue_antennas_m,
            scatterers_m=x + d[:, None] * r_ue,
            gains=np.sqrt(cs.ray_powers.ravel()[keep]) * np.exp(1j * cs.phases_rad.ravel()[keep]),
            cluster=np.repeat(np.arange(cs.ray_powers.shape[0]), n_rays)[keep],
            los_power=0.0,
            bs_directions=r_bs,
            # tau(x_d) = (d + offset) / c = the ray's 38.901 delay (sub-clusters included)
            path_offset_m=SPEED_OF_LIGHT * cs.ray_delays_s.ravel()[keep] - d,
        )

    def channels(
        self,
        positions_m: np.ndarray,
        n_subcarriers: int | None = None,
        subcarrier_spacing_hz: float = 30e3,
        ue_azimuth_rad: np.ndarray | None = None,
    ) -> torch.Tensor:
        """Channels at ``positions_m: float [n, 3]`` (m), arguments as ``paths.channels_at``.

        Returns
        -------
        torch.Tensor
            ``complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``: the sum over
            the drops in view of ``sqrt(weight)`` times each drop's response.
        """
        pos = checked_positions(positions_m)
        drops, weights = lattice_weights(pos[:, :2] - self.centre_m[None, :2], self.spacing_m, self.transition_m)
        seen = weights > 0
        out: torch.Tensor | None = None
        for i, j in sorted({tuple(d) for d in drops[seen].tolist()}):
            hit = seen & (drops[..., 0] == i) & (drops[..., 1] == j)  # [n, 4]
            rows = np.flatnonzero(hit.any(axis=1))
            w = (weights * hit).sum(axis=1)[rows]
            az = None if ue_azimuth_rad is None else np.asarray(ue_azimuth_rad)[rows]
            H = channels_at(self.drop(i, j), pos[rows], n_subcarriers, subcarrier_spacing_hz, az)
            if out is None:
                out = torch.zeros((pos.shape[0], *H.shape[1:]), dtype=torch.complex64)
            scale = torch.from_numpy(np.sqrt(w)).to(torch.float32).reshape(-1, *([1] * (H.dim() - 1)))
            out[torch.from_numpy(rows)] += H * scale
        assert out is not None  # every position sees at least one drop
        return out
