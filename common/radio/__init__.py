"""Link abstraction of a cell with Sionna SYS: what a transfer costs on the air.

``config`` (the ``[radio]`` table; light, no torch), ``cell`` (positions, path loss,
per-PRB SINR), ``transfer`` (PF scheduling, link adaptation, PHY abstraction and HARQ,
slot by slot), ``round`` (a fleet round: downlink, compute, uplink; airtime and energy).
Import the heavy modules by their own names.
"""

from common.radio.config import RADIO_CLASS_SCHEMA, RADIO_SCHEMA, CellConfig, validate_radio

__all__ = ["RADIO_SCHEMA", "RADIO_CLASS_SCHEMA", "CellConfig", "validate_radio"]
