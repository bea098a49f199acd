"""3GPP TR 38.901 channels from Sionna (sionna-no-rt, PyTorch): sources ``"umi"``,
``"uma"``, ``"rma"`` (system-level models) and ``"cdl"`` (CDL-A..E link-level profiles).

Sionna is imported lazily, on the first channel drawn from one of these sources, so
importing ``common.channels`` stays fast.

System-level sources (``umi``, ``uma``, ``rma``): the learngene paper's Table II by
default — BS with ``n_rx`` antennas at (0, 0, 15) m, UEs with ``n_tx`` antennas uniform
in a 5 m circle centred at (x, y, 1.5) m, 50 m < sqrt(x^2 + y^2) < 100 m, the centre
drawn from ``derive_seed(task.seed, "task-centre", task.task_id)``
(``common.channels.layout``); 6 GHz; uplink; NLoS forced; outdoor UEs; zero
velocities and array orientations. Path loss and shadow fading are disabled, so the
cluster powers sum to one and, with the default omnidirectional elements,
``E[|h_ij|^2] = 1`` (ensemble; with ``bs_pattern="38.901"`` the element gain scales it,
use ``normalise="sample"`` if that matters). UEs are simulated ``ue_chunk`` at a time
as the UTs of one Sionna topology, so large-scale parameters are spatially correlated
across the UEs of a chunk (Sionna's LSP correlation), as in a real 5 m circle.

Two generation methods give the same numbers:

- ``"direct"``: Sionna's own path coefficients (``SystemLevelChannel.__call__``), then
  ``cir_to_ofdm_channel``;
- ``"rays"`` (default): Sionna samples the LSPs and rays, and the channel is formed here
  from the rays with one vectorised steering-vector product (TR 38.901 eq. 7.5-22 for
  single-polarised arrays in NLoS; sub-cluster delays of the two strongest clusters as
  in Table 7.5-5), drawing the initial phases from Sionna's generator exactly as its
  step 10 does. ``tests/test_channels_sionna.py`` checks it against ``"direct"``.

Task options (defaults)
-----------------------
carrier_hz (6e9), subcarrier_spacing_hz (30e3): carrier and OFDM spacing, Hz.
method ("rays"): "rays" or "direct" (system-level sources only).
bs_array ("upa"), bs_rows (auto: 4 for 32), bs_spacing_wl (0.5), bs_pattern ("omni"):
    BS panel (single vertical polarisation; pattern "omni" or "38.901").
ue_array ("ula"), ue_rows (auto), ue_spacing_wl (0.5), ue_pattern ("omni"): UE panel.
los (False): False forces NLoS, True forces LoS, "random" draws it (chunks with LoS
    links are generated with the "direct" method).
o2i_model ("low"): Sionna's O2I model argument (UEs are outdoor; no effect).
ue_chunk (256): UEs per Sionna topology.
normalise ("none"): "none" or "sample" (each sample scaled to ``||H||_F^2 = n_rx n_tx``,
    per subcarrier-averaged power for wideband).
Layout: bs_height_m, ue_height_m, radius_m, min_distance_m, max_distance_m (see
``common.channels.layout``).

CDL source (``cdl``): option ``profile`` ("A".."E", default "C"), ``delay_spread_s``
(100e-9), ``carrier_hz``, arrays as above, ``normalise``; uplink. A CDL profile has no
geometry, so ``task_id`` picks a BS array yaw uniform in
``+-orientation_spread_deg`` (60; 0: every task the same), drawn from
``derive_seed(task.seed, "cdl-orientation", task.task_id)``.

Output (all sources): ``complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from common.channels.arrays import default_upa_rows, steering_vectors_torch
from common.channels.base import ChannelTask, register_source
from common.channels.gbsm import subcarrier_offsets_hz
from common.channels.layout import bs_position_m, ue_positions_m
from common.seeding import derive_seed, sionna_seeded

__all__ = ["SYSTEM_LEVEL_SOURCES", "umi", "uma", "rma", "cdl", "system_level_channels", "system_model"]

SYSTEM_LEVEL_SOURCES = ("umi", "uma", "rma")
_SUB_CLUSTER_RAYS = ((0, 1, 2, 3, 4, 5, 6, 7, 18, 19), (8, 9, 10, 11, 16, 17), (12, 13, 14, 15))  # Table 7.5-5
_SUB_CLUSTER_OFFSETS = (0.0, 1.28, 2.56)  # in units of c_DS


def _panel(task: ChannelTask, prefix: str, n: int, default_kind: str, carrier: float) -> Any:
    """Sionna PanelArray for one end (single vertical polarisation)."""
    from sionna.phy.channel.tr38901 import PanelArray

    kind = str(task.option(f"{prefix}_array", default_kind))
    if kind == "ula":
        rows = 1
    elif kind == "upa":
        rows = task.option(f"{prefix}_rows")
        if rows is None:
            rows = default_upa_rows(n)
        rows = int(rows)
        if rows < 1 or n % rows:
            raise ValueError(f"{prefix}_rows={rows} must divide the element count {n}")
    else:
        raise ValueError(f"{prefix}_array must be 'ula' or 'upa', got {kind!r}")
    pattern = str(task.option(f"{prefix}_pattern", "omni"))
    if pattern not in ("omni", "38.901"):
        raise ValueError(f"{prefix}_pattern must be 'omni' or '38.901', got {pattern!r}")
    spacing = float(task.option(f"{prefix}_spacing_wl", 0.5))
    return PanelArray(
        num_rows_per_panel=rows,
        num_cols_per_panel=n // rows,
        polarization="single",
        polarization_type="V",
        antenna_pattern=pattern,
        carrier_frequency=carrier,
        element_vertical_spacing=spacing,
        element_horizontal_spacing=spacing,
    )


_MODEL_OPTIONS = (
    "carrier_hz", "bs_array", "bs_rows", "bs_spacing_wl", "bs_pattern",
    "ue_array", "ue_rows", "ue_spacing_wl", "ue_pattern", "o2i_model",
)


@lru_cache(maxsize=16)
def _cached_model(source: str, n_rx: int, n_tx: int, options: tuple[Any, ...]) -> Any:
    from sionna.phy.channel.tr38901 import RMa, UMa, UMi

    task = ChannelTask.make(source, n_rx, n_tx, **{k: v for k, v in zip(_MODEL_OPTIONS, options) if v is not None})
    carrier = float(task.option("carrier_hz", 6e9))
    if carrier <= 0:
        raise ValueError(f"carrier_hz must be positive, got {carrier}")
    bs = _panel(task, "bs", n_rx, "upa", carrier)
    ue = _panel(task, "ue", n_tx, "ula", carrier)
    common = dict(carrier_frequency=carrier, ut_array=ue, bs_array=bs, direction="uplink", enable_pathloss=False, enable_shadow_fading=False)
    if source == "umi":
        return UMi(o2i_model=str(task.option("o2i_model", "low")), **common)
    if source == "uma":
        return UMa(o2i_model=str(task.option("o2i_model", "low")), **common)
    if source == "rma":
        return RMa(**common)
    raise ValueError(f"not a system-level source: {source!r}; expected one of {SYSTEM_LEVEL_SOURCES}")


def system_model(task: ChannelTask) -> Any:
    """The (cached) Sionna ``UMi`` / ``UMa`` / ``RMa`` object serving ``task``.

    Its ``_scenario`` holds the topology last set by ``system_level_channels`` (for
    inspection in tests: ``ut_loc``, ``bs_loc``, ``los``, ``indoor``).
    """
    return _cached_model(task.source, task.n_rx, task.n_tx, tuple(task.option(k) for k in _MODEL_OPTIONS))


def _set_topology(model: Any, ut_loc: np.ndarray, bs_loc: np.ndarray, los: Any) -> None:
    m = ut_loc.shape[0]
    model.reset_topology()
    model.set_topology(
        torch.as_tensor(ut_loc, dtype=torch.float32)[None],
        torch.as_tensor(bs_loc, dtype=torch.float32)[None, None],
        torch.zeros(1, m, 3),
        torch.zeros(1, 1, 3),
        torch.zeros(1, m, 3),
        torch.zeros(1, m, dtype=torch.bool),
        los=los,
    )


def _frequencies(n_subcarriers: int | None, spacing_hz: float) -> torch.Tensor:
    if n_subcarriers is None:
        return torch.zeros(1)
    return torch.from_numpy(subcarrier_offsets_hz(n_subcarriers, spacing_hz)).to(torch.float32)


def _direct(model: Any, freqs: torch.Tensor) -> torch.Tensor:
    """Sionna's own coefficients -> ``complex64 [m, K, n_rx, n_tx]``."""
    from sionna.phy.channel import cir_to_ofdm_channel

    model.return_rays = False
    a, tau = model(1, 1.0)  # a: [1, 1, n_rx, m, n_tx, P, 1], tau: [1, 1, m, P]
    h = cir_to_ofdm_channel(freqs, a, tau, normalize=False)  # [1, 1, n_rx, m, n_tx, 1, K]
    return h[0, 0, :, :, :, 0, :].permute(1, 3, 0, 2).to(torch.complex64)


def _phasor(phase: torch.Tensor) -> torch.Tensor:
    """``exp(j phase)`` via cos / sin (several times faster than a complex exp on CPU)."""
    return torch.complex(torch.cos(phase), torch.sin(phase))


def _unit(zenith: torch.Tensor, azimuth: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.sin(zenith) * torch.cos(azimuth), torch.sin(zenith) * torch.sin(azimuth), torch.cos(zenith)], dim=-1)


def _from_rays(model: Any, freqs: torch.Tensor) -> torch.Tensor:
    """Channel built from Sionna's rays with one steering-vector product.

    Reproduces ``_direct`` for single-polarised arrays, zero orientations, zero
    velocities, NLoS (TR 38.901 eq. 7.5-22 / 7.5-28).

    Returns
    -------
    torch.Tensor
        ``complex64 [m, K, n_rx, n_tx]``.
    """
    from sionna.phy.utils import rand

    scen = model._scenario
    if bool(scen.los.any()):
        raise ValueError("method='rays' supports NLoS links only; use method='direct' for LoS")
    rays = model._ray_sampler(model._lsp)  # downlink view: [1, n_bs=1, m, C, M]
    dtype = rays.aoa.dtype
    # step 10: initial phases, drawn exactly as Sionna does (uplink view [1, m, 1, C, M, 4])
    shape = (rays.aoa.shape[0], rays.aoa.shape[2], rays.aoa.shape[1], *rays.aoa.shape[3:])
    sampler = model._cir_sampler
    phi = rand((*shape, 4), dtype=sampler.dtype, device=sampler.device, generator=sampler.torch_rng) * 2 * math.pi - math.pi
    phi = phi[0, :, 0]  # [m, C, M, 4]
    # angles at the BS (downlink departure) and at the UE (downlink arrival), [m, C, M]
    aod, zod = rays.aod[0, 0], rays.zod[0, 0]
    aoa, zoa = rays.aoa[0, 0], rays.zoa[0, 0]
    bs_arr, ue_arr = scen.bs_array, scen.ut_array
    f_bs = torch.stack(bs_arr.ant_pol1.field(zod, aod), dim=-1)  # [m, C, M, 2] (theta, phi)
    f_ue = torch.stack(ue_arr.ant_pol1.field(zoa, aoa), dim=-1)
    xpr_scale = torch.sqrt(1 / rays.xpr[0, 0])  # [m, C, M]
    e = _phasor(phi)  # [m, C, M, 4]
    # eq. 7.5-28 field term: F_rx^T [[e0, k e1], [k e2, e3]] F_tx, rx = BS, tx = UE (uplink)
    w = (
        f_bs[..., 0] * (e[..., 0] * f_ue[..., 0] + xpr_scale * e[..., 1] * f_ue[..., 1])
        + f_bs[..., 1] * (xpr_scale * e[..., 2] * f_ue[..., 0] + e[..., 3] * f_ue[..., 1])
    )
    n_rays = aod.shape[-1]
    powers = rays.powers[0, 0]  # [m, C]
    w = w * torch.sqrt(powers / n_rays)[..., None]
    lam = 299_792_458.0 / float(scen.carrier_frequency)
    a_bs = steering_vectors_torch(_unit(zod, aod), bs_arr.ant_pos, lam)  # [m, C, M, n_rx], eq. 7.5-22
    a_ue = steering_vectors_torch(_unit(zoa, aoa), ue_arr.ant_pos, lam)  # [m, C, M, n_tx]
    m, n_cl = powers.shape
    a_bs = a_bs.to(torch.complex64)
    a_ue = a_ue.to(torch.complex64)
    wc = w.to(torch.complex64)
    if freqs.numel() == 1 and float(freqs[0]) == 0.0:
        # narrowband at the carrier: one product over all C*M rays
        bs_t = a_bs.reshape(m, n_cl * n_rays, -1).transpose(-1, -2)
        return (bs_t @ (wc.reshape(m, -1, 1) * a_ue.reshape(m, n_cl * n_rays, -1)))[:, None]  # [m, 1, n_rx, n_tx]
    # wideband: rays sharing a delay are summed first (per cluster and sub-cluster group,
    # Table 7.5-5), then H(f) = sum_q exp(-j 2 pi f tau_q) H_q over the 3C delay taps
    delays = rays.delays[0, 0]  # [m, C], s
    c_ds = scen.get_param("cDS")[0, 0] * 1e-9  # [m], s
    strongest = rays.strongest_cluster_indices
    strongest = torch.argsort(powers, dim=-1, descending=True)[..., :2] if strongest is None else strongest[0, 0]
    is_strong = torch.zeros(m, n_cl, dtype=dtype).scatter_(1, strongest.long(), 1.0)
    taps, tap_delays = [], []
    for rays_idx, k in zip(_SUB_CLUSTER_RAYS, _SUB_CLUSTER_OFFSETS):
        idx = [r for r in rays_idx if r < n_rays]
        bs_g = a_bs[:, :, idx].transpose(-1, -2)  # [m, C, n_rx, |g|]
        taps.append(bs_g @ (wc[:, :, idx, None] * a_ue[:, :, idx]))  # [m, C, n_rx, n_tx]
        tap_delays.append(delays + k * is_strong * c_ds[:, None])  # [m, C]
    H_q = torch.stack(taps, dim=1).reshape(m, 3 * n_cl, -1)  # [m, 3C, n_rx * n_tx]
    tau_q = torch.stack(tap_delays, dim=1).reshape(m, 3 * n_cl)  # [m, 3C]
    ph = -2 * math.pi * freqs.to(torch.float64)[None, :, None] * tau_q.to(torch.float64)[:, None, :]  # phase = -2 pi f tau
    steer = _phasor(ph).to(torch.complex64)  # [m, K, 3C]
    return (steer @ H_q).reshape(m, freqs.numel(), a_bs.shape[-1], a_ue.shape[-1])


def _normalise(H: torch.Tensor, task: ChannelTask) -> torch.Tensor:
    mode = str(task.option("normalise", "none"))
    if mode == "none":
        return H
    if mode == "sample":
        dims = tuple(range(1, H.ndim))
        return H * torch.rsqrt(H.abs().pow(2).mean(dim=dims, keepdim=True))
    raise ValueError(f"normalise must be 'none' or 'sample', got {mode!r}")


def system_level_channels(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> torch.Tensor:
    """Draw ``n`` channels from a Sionna system-level model (UMi / UMa / RMa).

    Parameters
    ----------
    task : ChannelTask
        ``source`` in ``SYSTEM_LEVEL_SOURCES``; options in the module docstring.
    n : int
        Number of UEs (channel samples).
    seed : int
        Picks the UE positions in the task's circle and Sionna's draws.
    n_subcarriers : int, optional
        Per-subcarrier responses at ``subcarrier_spacing_hz`` (baseband offsets,
        DC at index ``n_subcarriers // 2``).

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``.
    """
    method = str(task.option("method", "rays"))
    if method not in ("rays", "direct"):
        raise ValueError(f"method must be 'rays' or 'direct', got {method!r}")
    los = task.option("los", False)
    if los not in (False, True, "random"):
        raise ValueError(f"los must be False, True or 'random', got {los!r}")
    chunk = int(task.option("ue_chunk", 256))
    if chunk < 1:
        raise ValueError(f"ue_chunk must be >= 1, got {chunk}")
    model = system_model(task)
    pos = ue_positions_m(task, n, seed)
    bs = bs_position_m(task)
    freqs = _frequencies(n_subcarriers, float(task.option("subcarrier_spacing_hz", 30e3)))
    out = []
    for i, s in enumerate(range(0, n, chunk)):
        with sionna_seeded(derive_seed(seed, "sionna-38901", task.source, task.seed, task.task_id, i)):
            _set_topology(model, pos[s : s + chunk], bs, los)
            nlos = not bool(model._scenario.los.any())
            out.append(_from_rays(model, freqs) if method == "rays" and nlos else _direct(model, freqs))
    H = torch.cat(out, dim=0)
    H = H[:, 0] if n_subcarriers is None else H
    return _normalise(H, task).to(torch.complex64)


@register_source("umi")
def umi(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> torch.Tensor:
    """TR 38.901 UMi (street canyon), NLoS, Table II geometry. See the module docstring."""
    return system_level_channels(task, n, seed, n_subcarriers)


@register_source("uma")
def uma(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> torch.Tensor:
    """TR 38.901 UMa, NLoS, Table II geometry (BS height 15 m unless ``bs_height_m``)."""
    return system_level_channels(task, n, seed, n_subcarriers)


@register_source("rma")
def rma(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> torch.Tensor:
    """TR 38.901 RMa, NLoS, Table II geometry (BS height 15 m unless ``bs_height_m``)."""
    return system_level_channels(task, n, seed, n_subcarriers)


@register_source("cdl")
def cdl(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> torch.Tensor:
    """TR 38.901 CDL-A..E link-level channel, uplink (options in the module docstring).

    Returns
    -------
    torch.Tensor
        ``complex64 [n, n_rx, n_tx]`` or ``[n, n_subcarriers, n_rx, n_tx]``.
    """
    from sionna.phy.channel import cir_to_ofdm_channel
    from sionna.phy.channel.tr38901 import CDL

    profile = str(task.option("profile", "C")).upper()
    if profile not in ("A", "B", "C", "D", "E"):
        raise ValueError(f"CDL profile must be one of A..E, got {profile!r}")
    ds = float(task.option("delay_spread_s", 100e-9))
    if ds <= 0:
        raise ValueError(f"delay_spread_s must be positive, got {ds}")
    carrier = float(task.option("carrier_hz", 6e9))
    spread = float(task.option("orientation_spread_deg", 60.0))
    yaw = math.radians(spread) * (2 * np.random.default_rng(derive_seed(task.seed, "cdl-orientation", task.task_id)).random() - 1)
    freqs = _frequencies(n_subcarriers, float(task.option("subcarrier_spacing_hz", 30e3)))
    with sionna_seeded(derive_seed(seed, "sionna-cdl", task.seed, task.task_id)):
        model = CDL(
            profile,
            ds,
            carrier,
            ut_array=_panel(task, "ue", task.n_tx, "ula", carrier),
            bs_array=_panel(task, "bs", task.n_rx, "upa", carrier),
            direction="uplink",
            bs_orientation=torch.tensor([yaw, 0.0, 0.0]),
        )
        a, tau = model(n, 1, 1.0)  # a: [n, 1, n_rx, 1, n_tx, P, 1]
        h = cir_to_ofdm_channel(freqs, a, tau, normalize=False)  # [n, 1, n_rx, 1, n_tx, 1, K]
    H = h[:, 0, :, 0, :, 0, :].permute(0, 3, 1, 2)
    H = H[:, 0] if n_subcarriers is None else H
    return _normalise(H, task).to(torch.complex64)
