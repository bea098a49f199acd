"""Calibration of the built-in ``gbsm`` model (``model = "38.901"``) against TR 38.901
UMi street canyon NLoS, in the style of Sionna's own tr38901 tests: generated
distributions are compared (Kolmogorov-Smirnov) with the standard's, whose numbers are
typed here from the tables (V19.2.0), not taken from the code under test."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import kstest

from common.channels import ChannelTask, sample_channels
from common.channels.arrays import SPEED_OF_LIGHT, unit_vectors
from common.channels.gbsm import channels_along_track, channels_at, gbsm_environment, linear_track
from common.channels.gbsm_umi import UmiEnvironment
from common.channels.layout import ue_positions_m
from common.channels.spatial_consistency import ExponentialField, lattice_weights
from common.channels.tr38901_clusters import LargeScaleParameters, LosDirections, draw_clusters

FC_GHZ = 6.0  # learngene paper, Table II
LF = math.log10(1.0 + FC_GHZ)
# Table 7.5-6 Part-1, UMi street canyon NLoS: (mu_lgX, sigma_lgX) at fc = 6 GHz
TABLE = {
    "DS": (-0.22 * LF - 6.87, 0.19 * LF + 0.22),
    "ASD": (-0.24 * LF + 1.54, 0.10 * LF + 0.33),
    "ASA": (-0.07 * LF + 1.76, 0.05 * LF + 0.27),
    "ZSA": (-0.03 * LF + 0.92, -0.05 * LF + 0.35),
}
CAP_DEG = {"ASD": 104.0, "ASA": 104.0, "ZSA": 52.0, "ZSD": 52.0}  # step 4
# Table 7.5-3: ray offset angles (unit rms spread), m = 1..20
ALPHA = [0.0447, -0.0447, 0.1413, -0.1413, 0.2492, -0.2492, 0.3715, -0.3715, 0.5129, -0.5129,
         0.6797, -0.6797, 0.8844, -0.8844, 1.1481, -1.1481, 1.5195, -1.5195, 2.1551, -2.1551]
R_TAU, ZETA_DB, C_DS_NS, C_ASA, C_ASD, C_ZSA = 2.1, 3.0, 11.0, 22.0, 10.0, 7.0
KS_MAX = 0.08  # KS statistic bound for ~600 samples (critical value at 1 %: 1.63 / sqrt(600) = 0.067)


def _task(task_id: int = 0, **opts: object) -> ChannelTask:
    return ChannelTask.make("gbsm", 32, 8, task_id=task_id, seed=11, model="38.901", **opts)


def _zsd_mu(d2d_m: float) -> float:
    """Table 7.5-8, UMi NLoS, h_UT = 1.5 m < h_BS."""
    return max(-0.5, -3.1 * d2d_m / 1000.0 + 0.2)


@pytest.fixture(scope="module")
def drops() -> list[tuple[LargeScaleParameters, float]]:
    """The centre drop's LSPs of 600 tasks (600 environments), with their BS distance."""
    out = []
    for tid in range(600):
        env = UmiEnvironment(_task(tid))
        x = env.drop_position_m(0, 0)
        out.append((env.large_scale_parameters(0, 0), float(np.hypot(x[0], x[1]))))
    return out


def _limited_normal(mu: float, sigma: float, cap_deg: float | None) -> np.ndarray:
    """Reference samples of lgX: N(mu, sigma), capped at log10(cap) (Sionna's ``limited_normal``)."""
    x = np.random.default_rng(123).normal(mu, sigma, 200_000)
    return x if cap_deg is None else np.minimum(x, np.log10(cap_deg))


@pytest.mark.parametrize("name", ["DS", "ASD", "ASA", "ZSA"])
def test_lsp_log_normal_per_table(drops, name: str) -> None:
    """lgDS, lgASD, lgASA, lgZSA over many tasks: N(mu, sigma) of Table 7.5-6 (capped as in step 4)."""
    attr = {"DS": "ds_s", "ASD": "asd_deg", "ASA": "asa_deg", "ZSA": "zsa_deg"}[name]
    lg = np.log10([getattr(lsp, attr) for lsp, _ in drops])
    mu, sigma = TABLE[name]
    d, _ = kstest(np.log10(np.minimum(10**lg, CAP_DEG.get(name, np.inf))), _limited_normal(mu, sigma, CAP_DEG.get(name)))
    assert d < KS_MAX, (name, d, lg.mean(), lg.std())


def test_zsd_and_zod_offset_per_table_7_5_8(drops) -> None:
    z = np.array([(math.log10(lsp.zsd_deg) - _zsd_mu(d2d)) / 0.35 for lsp, d2d in drops])
    d, _ = kstest(z, "norm")
    assert d < KS_MAX
    lsp, d2d = drops[0]
    assert lsp.zod_offset_deg == pytest.approx(-(10 ** (-1.5 * math.log10(max(10.0, d2d)) + 3.3)))


def test_lsp_cross_correlation_per_table(drops) -> None:
    """Table 7.5-6 Part-1: ASA vs DS 0.4, ZSD vs DS -0.5, ZSD vs ASD 0.5, ZSA vs ASD 0.5, ASD vs DS 0."""
    lg = {
        "DS": np.log10([l.ds_s for l, _ in drops]),
        "ASD": np.log10([l.asd_deg for l, _ in drops]),
        "ASA": np.log10([l.asa_deg for l, _ in drops]),
        "ZSA": np.log10([l.zsa_deg for l, _ in drops]),
        "ZSD": np.array([math.log10(l.zsd_deg) - _zsd_mu(d) for l, d in drops]),
    }
    for a, b, rho in [("ASA", "DS", 0.4), ("ZSD", "DS", -0.5), ("ZSD", "ASD", 0.5), ("ZSA", "ASD", 0.5), ("ASD", "DS", 0.0)]:
        # the ASA / ZSA caps bend the correlation a little: 0.12 on 600 samples
        assert np.corrcoef(lg[a], lg[b])[0, 1] == pytest.approx(rho, abs=0.12), (a, b)


def test_lsp_field_correlation_distance() -> None:
    """Sec. 7.6.3.1: correlation exp(-d / d_corr) between points d apart (d_corr = 10 m)."""
    rng = np.random.default_rng(0)
    fields = [ExponentialField(rng, 10.0) for _ in range(3000)]
    p0 = np.array([[3.0, -2.0]])
    v0 = np.array([f(p0)[0] for f in fields])
    assert v0.mean() == pytest.approx(0.0, abs=0.06) and v0.std() == pytest.approx(1.0, abs=0.05)
    for d in (2.0, 10.0, 30.0):
        v = np.array([f(p0 + np.array([[d * 0.6, d * 0.8]]))[0] for f in fields])
        assert np.corrcoef(v0, v)[0, 1] == pytest.approx(math.exp(-d / 10.0), abs=0.06), d


def _lsp(ds_ns: float = 100.0) -> LargeScaleParameters:
    return LargeScaleParameters(ds_ns * 1e-9, 20.0, 50.0, 8.0, 1.0, 0.0, -3.0)


def test_clusters_rays_and_offsets() -> None:
    """19 clusters x 20 rays; ray offsets c_AS alpha_m (Table 7.5-3); sub-clusters (Table 7.5-5)."""
    los = LosDirections(aoa_deg=30.0, zoa_deg=80.0, aod_deg=210.0, zod_deg=100.0)
    cs = draw_clusters(np.random.default_rng(1), _lsp(), los)
    assert cs.aoa_deg.shape == (19, 20) and cs.ray_delays_s.shape == (19, 20)
    centre = cs.aoa_deg.mean(axis=1, keepdims=True)  # the offsets are symmetric: mean = cluster angle
    assert np.allclose(cs.aoa_deg - centre, C_ASA * np.array(ALPHA)[None], atol=1e-9)
    for ang, c in ((cs.aod_deg, C_ASD), (cs.zoa_deg, C_ZSA)):  # randomly coupled: same offsets, permuted
        off = np.sort(ang - ang.mean(axis=1, keepdims=True), axis=1)  # (ZoA 80 deg: no fold at a pole)
        assert np.allclose(off, c * np.sort(ALPHA)[None], atol=1e-9)
    assert np.all((cs.zoa_deg >= 0) & (cs.zoa_deg <= 180) & (cs.zod_deg >= 0) & (cs.zod_deg <= 180))
    assert cs.ray_powers.sum() == pytest.approx(1.0)
    # the two strongest clusters: rays 9-12, 17-18 at +1.28 c_DS, rays 13-16 at +2.56 c_DS
    for c in np.argsort(-cs.cluster_powers)[:2]:
        extra_ns = (cs.ray_delays_s[c] - cs.cluster_delays_s[c]) * 1e9
        expect = np.zeros(20)
        expect[[8, 9, 10, 11, 16, 17]] = 1.28 * C_DS_NS
        expect[[12, 13, 14, 15]] = 2.56 * C_DS_NS
        assert np.allclose(extra_ns, expect)
    others = np.argsort(-cs.cluster_powers)[2:]
    assert np.allclose(cs.ray_delays_s[others], cs.cluster_delays_s[others, None])


def test_cluster_delays_and_powers_follow_eq_7_5_1_to_7_5_6() -> None:
    """Delays and powers of many draws against a reference written from eq. (7.5-1)-(7.5-6)."""
    ds = 100e-9
    rng = np.random.default_rng(2)
    ref_tau, ref_p = [], []
    for _ in range(400):
        tau = -R_TAU * ds * np.log(rng.random(19))
        tau = np.sort(tau - tau.min())
        p = np.exp(-tau * (R_TAU - 1) / (R_TAU * ds)) * 10 ** (-rng.normal(0, ZETA_DB, 19) / 10)
        p = p / p.sum()
        p[p < p.max() * 10**-2.5] = 0.0
        ref_tau.append(tau)
        ref_p.append(p / p.sum())
    got = [draw_clusters(np.random.default_rng(1000 + k), _lsp(), LosDirections(0, 90, 180, 90)) for k in range(400)]
    tau = np.concatenate([g.cluster_delays_s for g in got])
    p = np.concatenate([g.cluster_powers for g in got])
    assert kstest(tau, np.concatenate(ref_tau)).statistic < 0.03
    assert kstest(p, np.concatenate(ref_p)).statistic < 0.03
    # cluster power decays with delay: the mean power of the first cluster over the last
    p_first = np.mean([g.cluster_powers[0] for g in got])
    p_last = np.mean([g.cluster_powers[-1] for g in got])
    assert p_first > 20 * p_last


def test_geometry_realises_the_drawn_angles_and_delays() -> None:
    """At the drop's reference point the UE sees each ray from its (AoA, ZoA), with its delay."""
    env = gbsm_environment(_task(3))
    assert isinstance(env, UmiEnvironment)
    cs = env.clusters(0, 0)
    drop = env.drop(0, 0)
    keep = cs.ray_powers.ravel() > 0
    x = env.drop_position_m(0, 0)
    r = drop.scatterers_m - x
    expect_ue = unit_vectors(np.radians(cs.zoa_deg), np.radians(cs.aoa_deg)).reshape(-1, 3)[keep]
    assert np.allclose(r / np.linalg.norm(r, axis=1, keepdims=True), expect_ue, atol=1e-9)
    assert np.allclose(drop.bs_directions, unit_vectors(np.radians(cs.zod_deg), np.radians(cs.aod_deg)).reshape(-1, 3)[keep])
    assert np.allclose(drop.path_delays_s(x[None])[0], cs.ray_delays_s.ravel()[keep], atol=1e-15)
    # scatterers stay out of the region that sees the drop (|dx|, |dy| <= (15 + 5) / 2 m)
    assert np.linalg.norm(r, axis=1).min() > math.sqrt(2) * 10.0
    # ray gains: sum of powers 1
    assert np.sum(np.abs(drop.gains) ** 2) == pytest.approx(1.0)


def test_task_is_one_environment_with_unit_power() -> None:
    H = sample_channels(_task(1), 1500, seed=1)
    assert H.shape == (1500, 32, 8)
    assert abs(H.abs().pow(2).mean().item() - 1.0) < 0.1
    # UEs of one task share scatterers: their channels are more alike than another task's
    f = H.reshape(1500, -1)
    f = f / f.norm(dim=1, keepdim=True)
    g = sample_channels(_task(2), 200, seed=1).reshape(200, -1)
    g = g / g.norm(dim=1, keepdim=True)
    same = (f[:200] @ f[200:400].conj().T).abs().pow(2).mean().item()
    other = (f[:200] @ g.conj().T).abs().pow(2).mean().item()
    assert same > 2 * other
    # same seed, same numbers; another task, another environment
    assert torch.equal(sample_channels(_task(1), 5, seed=7), sample_channels(_task(1), 5, seed=7))
    assert not torch.allclose(sample_channels(_task(1), 5, seed=7), sample_channels(_task(2), 5, seed=7))


def test_wideband_follows_the_delay_spread() -> None:
    """Per-subcarrier responses: the DC subcarrier is the narrowband channel; a ~100 ns delay
    spread keeps 120 kHz neighbours alike and decorrelates subcarriers ~7.6 MHz apart."""
    task = _task(6, subcarrier_spacing_hz=120e3)
    H = sample_channels(task, 150, seed=2, n_subcarriers=128)
    assert torch.allclose(sample_channels(task, 150, seed=2), H[:, 64], atol=1e-5)
    assert _corr(H[:, 64], H[:, 65]) > 0.99
    assert _corr(H[:, 64], H[:, 127]) < 0.6


def test_lattice_weights_partition_of_unity() -> None:
    rng = np.random.default_rng(0)
    xy = rng.uniform(-40, 40, (2000, 2))
    drops, w = lattice_weights(xy, 15.0, 5.0)
    assert np.allclose(w.sum(axis=1), 1.0)
    # the plateau: within 5 m of the centre only drop (0, 0) is seen
    inner = np.abs(xy).max(axis=1) <= 5.0
    assert np.all(np.sort(w[inner], axis=1)[:, -1] == 1.0)
    assert np.all(drops[inner][w[inner] == 1.0] == 0)
    # a point half-way between two drops sees both equally
    d, w = lattice_weights(np.array([[7.5, 0.0]]), 15.0, 5.0)
    assert sorted(w[0][w[0] > 0].tolist()) == pytest.approx([0.5, 0.5])


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a * b.conj()).sum().abs() / torch.sqrt(a.abs().pow(2).sum() * b.abs().pow(2).sum())).item()


def test_track_is_smooth_and_sees_cluster_birth_and_death() -> None:
    """Along a 60 m track: small steps change the channel little, even through the
    transitions between drops; the cluster set changes every 15 m; the channel decorrelates."""
    task = _task(4)
    env = gbsm_environment(task)
    c = env.drop_position_m(0, 0)
    track = linear_track(c, c + np.array([60.0, 0.0, 0.0]), 0.05)
    # the ramps between drops start and end at 5, 10, 20, 25, ... m: probe those points too
    edges = c + np.array([[e, 0.0, 0.0] for e in (5.0, 10.0, 20.0, 25.0, 35.0, 40.0, 50.0, 55.0)])
    probes = np.concatenate([track, edges - np.array([0.0005, 0.0, 0.0])])
    H = channels_along_track(task, probes)
    H1 = channels_along_track(task, probes + np.array([0.001, 0.0, 0.0]))  # 1 mm = 0.02 lambda further
    step = (H1 - H).abs().pow(2).sum(dim=(1, 2)) / H.abs().pow(2).sum(dim=(1, 2)).mean()
    # rich scattering (Clarke): 2 (1 - J0(2 pi 0.02)) = 0.008 on average; a jump would be ~2
    assert step.mean().item() < 0.02 and step.max().item() < 0.05, (step.mean(), step.max())
    H = H[: len(track)]
    drops, w = lattice_weights(track[:, :2] - c[:2], 15.0, 5.0)
    seen = [{tuple(d) for d, x in zip(dr.tolist(), wr) if x > 0} for dr, wr in zip(drops, w)]
    assert seen[0] == {(0, 0)} and (0, 0) not in seen[-1] and len(set().union(*seen)) >= 5
    # the source and the track agree at the same positions
    assert torch.allclose(channels_at(env, track[:3]), H[:3])


def test_correlation_falls_over_the_correlation_distance() -> None:
    rhos = []
    for tid in range(4):
        task = _task(tid)
        lam = SPEED_OF_LIGHT / 6e9
        p0 = ue_positions_m(task, 30, seed=tid)
        H0 = channels_along_track(task, p0)
        row = []
        for d in (0.1 * lam, 1.0, 30.0):
            row.append(_corr(H0, channels_along_track(task, p0 + np.array([d, 0.0, 0.0]))))
        rhos.append(row)
    r = np.mean(rhos, axis=0)
    assert r[0] > 0.9 and r[0] > r[1] > r[2] and r[2] < 0.3, r


def test_bs_covariance_changes_over_the_cluster_correlation_distance() -> None:
    """Large-scale consistency: the BS-side covariance of a small neighbourhood stays nearly
    the same 1 m away (same clusters) and changes 30 m away (other drops: born clusters)."""
    def cov(task: ChannelTask, centre: np.ndarray) -> torch.Tensor:
        ring = np.stack([np.cos(np.arange(24) * 0.26), np.sin(np.arange(24) * 0.26), np.zeros(24)], axis=-1)
        H = channels_along_track(task, centre + 0.4 * ring * np.linspace(0.2, 1.0, 24)[:, None]).to(torch.complex128)
        return (H @ H.conj().transpose(-1, -2)).sum(0)

    def similarity(a: torch.Tensor, b: torch.Tensor) -> float:
        return (torch.trace(a @ b).real / (torch.linalg.norm(a) * torch.linalg.norm(b))).item()

    near, far = [], []
    for tid in range(4):
        task = _task(tid)
        x0 = gbsm_environment(task).drop_position_m(0, 0)
        r0 = cov(task, x0)
        near.append(similarity(r0, cov(task, x0 + np.array([1.0, 0.0, 0.0]))))
        far.append(similarity(r0, cov(task, x0 + np.array([30.0, 0.0, 0.0]))))
    assert np.mean(near) > 0.85 and np.mean(far) < np.mean(near) - 0.15, (near, far)


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ValueError, match="'model'"):
        sample_channels(ChannelTask.make("gbsm", 32, 8, model="qd"), 2, seed=0)
    with pytest.raises(ValueError, match="'n_clusters'.*legacy"):
        sample_channels(_task(0, n_clusters=4), 2, seed=0)
    with pytest.raises(ValueError, match="'transition_m'"):
        sample_channels(_task(0, transition_m=20.0), 2, seed=0)
    with pytest.raises(ValueError, match="'bs_facing'"):
        sample_channels(_task(0, bs_facing="north"), 2, seed=0)


def test_bs_facing_task_turns_the_panel_to_the_task() -> None:
    """The 4x8 panel lies in the plane normal to the BS -> task-centre azimuth (its boresight)."""
    fixed, facing = UmiEnvironment(_task(5, bs_facing="fixed")), UmiEnvironment(_task(5, bs_facing="task"))
    assert np.allclose(fixed.bs_antennas_m[:, 0], 0.0)  # panel in the yz plane, boresight +x
    c = facing.centre_m
    boresight = np.array([c[0], c[1], 0.0]) / np.hypot(c[0], c[1])
    assert np.allclose(facing.bs_antennas_m @ boresight, 0.0)
    assert np.allclose(np.linalg.norm(facing.bs_antennas_m, axis=1), np.linalg.norm(fixed.bs_antennas_m, axis=1))
    assert not torch.allclose(sample_channels(_task(5, bs_facing="fixed"), 3, seed=0), sample_channels(_task(5, bs_facing="task"), 3, seed=0))


def test_default_facing_is_the_serving_sector_of_a_three_sector_site() -> None:
    """TR 38.901 Table 7.8-1: boresights at 30, 150, 270 deg; a task is served by the one
    nearest its azimuth, so it lies within 60 deg of the panel's boresight (never end-fire)."""
    seen = set()
    for tid in range(40):
        env = UmiEnvironment(_task(tid))
        ant = env.bs_antennas_m
        # the panel is planar and vertical: its horizontal normal is the boresight (up to sign)
        centred = ant - ant.mean(0)
        normal = np.linalg.svd(centred)[2][-1]
        assert abs(normal[2]) < 1e-9
        boresight_deg = math.degrees(math.atan2(normal[1], normal[0])) % 180.0
        match = [b for b in (30.0, 150.0, 270.0) if math.isclose(b % 180.0, boresight_deg, abs_tol=1e-6)]
        assert len(match) == 1, boresight_deg
        seen.add(match[0])
        azimuth = math.degrees(math.atan2(env.centre_m[1], env.centre_m[0]))
        off = (azimuth - match[0] + 180.0) % 360.0 - 180.0
        assert abs(off) <= 60.0 + 1e-9, (tid, azimuth, match[0])
    assert seen == {30.0, 150.0, 270.0}


def test_cache_key_holds_the_resolved_model(monkeypatch) -> None:
    import common.channels.gbsm as gbsm
    from common.channels.cache import cache_key

    plain = ChannelTask.make("gbsm", 32, 8)
    before = cache_key(plain, 10, 0)
    monkeypatch.setattr(gbsm, "DEFAULT_MODEL", "legacy" if gbsm.DEFAULT_MODEL == "38.901" else "38.901")
    assert cache_key(plain, 10, 0) != before
