"""The ``[radio]`` table of a scenario: the cell a fleet's transfers go over.

Without a ``[radio]`` table a transfer costs bits / the class's fixed ``uplink_bps`` /
``downlink_bps`` (``common.profiles.emulated_seconds``). With one, every transfer goes over
the device's own link (``common.radio.round``).

Numerology per 3GPP TS 38.211 Sec. 4.2-4.3: subcarrier spacing 15 * 2^mu kHz, 14 OFDM
symbols per slot, slot length 1 ms / 2^mu, 12 subcarriers per PRB. The default PRB count
of a bandwidth is the maximum transmission bandwidth configuration N_RB of TS 38.101-1
Table 5.3.2-1 (FR1) where the table has the bandwidth, else the largest count whose
12 * N_RB * SCS occupies at most 95 % of it; a PRB count whose occupied bandwidth
exceeds the channel bandwidth is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from common.schema import Field, ScenarioError

__all__ = ["RADIO_SCHEMA", "RADIO_CLASS_SCHEMA", "CellConfig", "validate_radio", "validate_radio_class", "max_prbs", "SHADOWING_STD_DB"]

#: TS 38.101-1 Table 5.3.2-1: (bandwidth MHz, SCS kHz) -> maximum N_RB
_NRB_TABLE: dict[tuple[int, int], int] = {
    (5, 15): 25, (10, 15): 52, (15, 15): 79, (20, 15): 106, (25, 15): 133, (30, 15): 160, (40, 15): 216, (50, 15): 270,
    (5, 30): 11, (10, 30): 24, (15, 30): 38, (20, 30): 51, (25, 30): 65, (30, 30): 78, (40, 30): 106, (50, 30): 133,
    (60, 30): 162, (80, 30): 217, (90, 30): 245, (100, 30): 273,
    (10, 60): 11, (15, 60): 18, (20, 60): 24, (25, 60): 31, (30, 60): 38, (40, 60): 51, (50, 60): 65, (60, 60): 79,
    (80, 60): 107, (90, 60): 121, (100, 60): 135,
}

#: TR 38.901 Table 7.4.1-1: shadow-fading standard deviation (dB), NLoS
SHADOWING_STD_DB = {"umi": 7.82, "uma": 6.0}

RADIO_SCHEMA: dict[str, Field] = {
    "carrier_hz": Field(float, 3.5e9, min=0.5e9, max=7.125e9, doc="carrier frequency (Hz, FR1)"),
    "bandwidth_hz": Field(float, 20e6, min=1e6, max=400e6, doc="channel bandwidth (Hz)"),
    "numerology": Field(int, 1, min=0, max=3, doc="mu: subcarrier spacing 15*2^mu kHz, slot 1/2^mu ms"),
    "n_prb": Field(int, 0, doc="PRBs (0: N_RB of TS 38.101-1 Table 5.3.2-1 for the bandwidth)"),
    "scenario": Field(str, "umi", doc="38.901 path-loss scenario: 'umi' or 'uma'"),
    "bs_height_m": Field(float, 15.0, min=1.0, max=100.0, doc="BS height (m)"),
    "ue_height_m": Field(float, 1.5, min=1.0, max=22.5, doc="UE height (m)"),
    "bs_power_dbm": Field(float, 40.0, min=0.0, max=60.0, doc="BS transmit power over the whole band (dBm)"),
    "bs_noise_figure_db": Field(float, 5.0, min=0.0, max=20.0, doc="BS receiver noise figure (dB)"),
    "ue_noise_figure_db": Field(float, 9.0, min=0.0, max=20.0, doc="UE receiver noise figure (dB)"),
    "p0_dbm": Field(float, -90.0, min=-130.0, max=0.0, doc="uplink open-loop power control: target rx power per PRB (dBm)"),
    "alpha": Field(float, 1.0, min=0.0, max=1.0, doc="uplink open-loop power control: path-loss compensation"),
    "shadowing_db": Field(float, -1.0, max=20.0, doc="shadow-fading std (dB; -1: the scenario's 38.901 NLoS value)"),
    "interference_db": Field(float, 0.0, min=0.0, max=40.0, doc="without the neighbour topology: interference over thermal (dB), both links"),
    "neighbour_rings": Field(int, 0, min=0, max=2, doc="neighbour cells of Sionna's 38.901 hexagonal grid: 1 ring (6) or 2 rings (18); 0: none (interference_db)"),
    "neighbour_load": Field(float, 0.5, min=0.0, max=1.0, doc="probability that a neighbour cell uses a PRB (uplink: one UE on it; downlink: its BS)"),
    "isd_m": Field(float, 0.0, min=0.0, max=10000.0, doc="inter-site distance of the grid (m; 0: 38.901 Table 7.2-1, 200 UMi / 500 UMa)"),
    "neighbour_ue_power_dbm": Field(float, 23.0, min=-10.0, max=33.0, doc="neighbour cells' UE maximum transmit power (dBm)"),
    "fading": Field(str, "task", choices=("task", "rayleigh"), doc="per-PRB small-scale fading: 'task' (each device's own channel task) or 'rayleigh' (i.i.d.)"),
    "bler_target": Field(float, 0.1, min=0.001, max=0.5, doc="outer-loop link adaptation BLER target"),
    "scheduler": Field(str, "pf", choices=("pf",), doc="'pf': Sionna PFSchedulerSUMIMO"),
    "pf_beta": Field(float, 0.98, min=0.01, max=0.999, doc="PF throughput discount factor"),
    "unit_downlink": Field(str, "unicast", choices=("unicast", "broadcast"), doc="learngene unit: unicast per device or broadcast once at the weakest receiver's MCS"),
    "hold_slots": Field(int, 64, min=1, max=100_000, doc="most slots an allocation is kept while every ready device is scheduled and none finishes (1: the scheduler decides every slot)"),
    "max_slots": Field(int, 2_000_000, min=1, doc="give up a transfer phase after this many slots (its devices: not delivered)"),
}

#: per device class, under ``[[fleet]]`` (used only with a ``[radio]`` table)
RADIO_CLASS_SCHEMA: dict[str, Field] = {
    "ue_power_dbm": Field(float, 23.0, min=-10.0, max=33.0, doc="UE maximum transmit power (dBm; 23: power class 3)"),
    "pa_efficiency": Field(float, 0.3, min=0.01, max=1.0, doc="power-amplifier efficiency (radiated / drawn)"),
    "energy_per_flop_j": Field(float, 1e-11, min=0.0, max=1e-6, doc="compute energy per FLOP (J)"),
    "distance_m": Field(float, 0.0, min=0.0, max=5000.0, doc="BS distance (m) along the task's bearing (0: where the task puts the device)"),
    "body_loss_db": Field(float, 0.0, min=0.0, max=40.0, doc="extra loss: body, wrist, indoor penetration (dB)"),
    "rx_power_w": Field(float, 0.5, min=0.0, max=10.0, doc="power the device draws while receiving on the downlink (W): energy = this x downlink airtime"),
    "speed_mps": Field(float, 0.0, min=0.0, max=500.0, doc="mobility: speed along a straight track (m/s; 0: a fresh drop in the task circle every round), common.radio.mobility"),
    "heading": Field(str, "random", choices=("random", "away"), doc="mobility: direction of the track, 'random' (seeded per device) or 'away' (radially from the BS)"),
    "round_interval_s": Field(float, 1.0, min=0.0, max=1e6, doc="mobility clock: emulated seconds between the starts of consecutive rounds"),
}


def max_prbs(bandwidth_hz: float, numerology: int) -> int:
    """Maximum PRB count of a bandwidth at numerology ``mu`` (see the module docstring)."""
    scs = 15e3 * 2**numerology
    key = (round(bandwidth_hz / 1e6), round(scs / 1e3))
    if abs(bandwidth_hz - key[0] * 1e6) < 1.0 and key in _NRB_TABLE:
        return _NRB_TABLE[key]
    return int(math.floor(0.95 * bandwidth_hz / (12 * scs)))


@dataclass(frozen=True)
class CellConfig:
    """A resolved ``[radio]`` table, with its derived numerology.

    Attributes
    ----------
    data : dict
        The validated table.
    n_prb : int
        PRBs in the band.
    scs_hz : float
        Subcarrier spacing (Hz).
    slot_s : float
        Slot length (s).
    """

    data: dict[str, Any]
    n_prb: int
    scs_hz: float
    slot_s: float

    #: OFDM symbols per slot (normal cyclic prefix) and of them DMRS/control (1 DMRS + 1 PDCCH/PUCCH symbol)
    SYMBOLS: int = 14
    OVERHEAD_SYMBOLS: int = 2

    @property
    def re_per_prb(self) -> int:
        """Data resource elements of one PRB in one slot."""
        return 12 * (self.SYMBOLS - self.OVERHEAD_SYMBOLS)

    @property
    def prb_bandwidth_hz(self) -> float:
        return 12.0 * self.scs_hz

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> CellConfig:
        scs = 15e3 * 2 ** int(data["numerology"])
        return cls(dict(data), int(data["n_prb"]), scs, 1e-3 / 2 ** int(data["numerology"]))


def validate_radio_class(c: dict[str, Any], key: str) -> dict[str, Any]:
    """Checks across the radio keys of a section-validated ``[[fleet]]`` class.

    Raises
    ------
    ScenarioError
        Naming ``<key>.speed_mps``.
    """
    if c["speed_mps"] > 0 and c["distance_m"] > 0:
        raise ScenarioError(f"{key}.speed_mps", "a moving class starts in its task circle: give either speed_mps or distance_m, not both")
    return c


def validate_radio(radio: dict[str, Any], key: str = "radio") -> dict[str, Any]:
    """Checks across keys of a section-validated ``[radio]`` table; fills ``n_prb``.

    Raises
    ------
    ScenarioError
        Naming ``radio.<key>``.
    """
    if radio["scenario"] not in SHADOWING_STD_DB:
        raise ScenarioError(f"{key}.scenario", f"unknown scenario {radio['scenario']!r}; expected one of {sorted(SHADOWING_STD_DB)}")
    if radio["shadowing_db"] < 0 and radio["shadowing_db"] != -1.0:
        raise ScenarioError(f"{key}.shadowing_db", f"{radio['shadowing_db']} must be >= 0, or -1 for the scenario's value")
    limit = max_prbs(radio["bandwidth_hz"], radio["numerology"])
    if limit < 1:
        raise ScenarioError(f"{key}.bandwidth_hz", f"{radio['bandwidth_hz']:g} Hz holds no PRB at numerology {radio['numerology']}")
    if radio["n_prb"] == 0:
        radio["n_prb"] = limit
    scs = 15e3 * 2 ** radio["numerology"]
    if not 1 <= radio["n_prb"] <= limit:
        raise ScenarioError(
            f"{key}.n_prb",
            f"{radio['n_prb']} PRBs at {scs / 1e3:g} kHz spacing cannot fit {radio['bandwidth_hz'] / 1e6:g} MHz (1..{limit})",
        )
    if radio["neighbour_rings"] > 0 and radio["interference_db"] > 0:
        raise ScenarioError(f"{key}.interference_db", "give either neighbour_rings (the topology) or interference_db (a rise over thermal), not both")
    if 0 < radio["isd_m"] < 50.0:
        raise ScenarioError(f"{key}.isd_m", f"{radio['isd_m']} m is below 50 m (0: the scenario's default)")
    if radio["ue_height_m"] >= radio["bs_height_m"]:
        raise ScenarioError(f"{key}.ue_height_m", f"{radio['ue_height_m']} m is not below the BS ({radio['bs_height_m']} m)")
    return radio
