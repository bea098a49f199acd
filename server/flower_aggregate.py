"""Flower 1.41's server-side aggregation rules, applied to learngene unit updates.

The federated learngene loop (``server.stages.unit_update``) aggregates decoded unit
updates by a scenario rule (``[manufacturer.federation] aggregation``). Its default, the
sample-weighted mean, is streamed there (``common.learngene.federation.WeightedMean``);
every other rule is one of Flower's strategies (``flwr.serverapp.strategy``), reused
here rather than written again: :class:`FlowerRule` feeds a strategy's own
``aggregate_train`` with reply Messages built from the contributions, so the
arithmetic (FedAvgM's server momentum, FedAdam's moments, FedMedian's element-wise
median, FedTrimmedAvg's ``trim_mean``, Krum's ``select_multikrum``) is Flower's.

- ``fedavgm``, ``fedadam``: server optimizers on the pseudo-gradient of the round's
  weighted mean; they receive ONE contribution (the streamed mean, as parameters), so
  the base station still holds no per-device copies.
- ``fedmedian``, ``fedtrimmedavg``, ``krum``: robust rules need every contribution at once;
  the stage holds the decoded updates of the publication window (bounded by that
  window's contributors: at most the fleet size per round times ``publish_every_rounds``).

This is the one module besides the Flower apps, ``server.message_size`` and
``server.flower_dispatch`` that imports ``flwr`` (the import-linter contract's ignore list
says so).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, Metadata, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAdam, FedAvgM, FedMedian, FedTrimmedAvg, Krum

__all__ = ["FlowerRule", "STREAMED_RULES", "ROBUST_RULES"]

_STRATEGIES = {"fedavgm": FedAvgM, "fedadam": FedAdam, "fedmedian": FedMedian, "fedtrimmedavg": FedTrimmedAvg, "krum": Krum}
#: rules that take the streamed weighted mean (one contribution per publication)
STREAMED_RULES = ("fedavgm", "fedadam")
#: rules that need every contribution of the publication window
ROBUST_RULES = ("fedmedian", "fedtrimmedavg", "krum")
_WEIGHT = "num-examples"
_ARRAYS = "arrays"


class FlowerRule:
    """One Flower strategy, kept for a whole run (its optimizer state persists).

    Parameters
    ----------
    rule : str
        ``fedavgm``, ``fedadam``, ``fedmedian``, ``fedtrimmedavg`` or ``krum``.
    options : mapping
        The strategy's keyword arguments (``common.learngene.federation.RULE_OPTIONS``);
        Flower's defaults otherwise.
    """

    def __init__(self, rule: str, options: Mapping[str, Any] | None = None) -> None:
        if rule not in _STRATEGIES:
            raise ValueError(f"no Flower rule {rule!r}; expected one of {sorted(_STRATEGIES)}")
        self.rule = rule
        self.strategy = _STRATEGIES[rule](weighted_by_key=_WEIGHT, arrayrecord_key=_ARRAYS, **dict(options or {}))

    def aggregate(self, rnd: int, current: Mapping[str, np.ndarray], contributions: list[tuple[float, Mapping[str, np.ndarray]]]) -> dict[str, np.ndarray]:
        """The new parameters from ``current`` and the contributions' parameters.

        Parameters
        ----------
        rnd : int
            The publication's index (FedAdam's bias correction counts it).
        current : mapping of str -> float32 array
            The unit version the contributions were trained from.
        contributions : list of (weight, mapping of str -> array)
            Trained parameters (``current + update``) and their weights (samples).

        Returns
        -------
        dict of str -> float32 array
        """
        if not contributions:
            raise ValueError("no contributions to aggregate")
        if self.rule == "fedavgm":
            self.strategy.current_arrays = ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in current.items()})
        elif self.rule == "fedadam":
            self.strategy.current_arrays = {k: np.asarray(v, dtype=np.float32) for k, v in current.items()}
        replies = [
            Message(
                RecordDict({_ARRAYS: ArrayRecord({k: Array(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}), "metrics": MetricRecord({_WEIGHT: float(w)})}),
                metadata=Metadata(0, "", i, 0, "", "", 0.0, 0.0, "train"),  # a reply as Flower's grid would hand it over
            )
            for i, (w, arrays) in enumerate(contributions)
        ]
        log = logging.getLogger("flwr")
        level = log.level
        log.setLevel(logging.WARNING)  # the strategies log every call at INFO
        try:
            arrays, _ = self.strategy.aggregate_train(int(rnd), replies)
        finally:
            log.setLevel(level)
        if arrays is None:
            raise RuntimeError(f"Flower's {self.rule} returned no arrays")
        return {k: np.asarray(a.numpy(), dtype=np.float32) for k, a in arrays.items()}

    def state(self) -> dict[str, np.ndarray]:
        """The strategy's server-side optimizer state (a checkpoint): FedAdam's moments
        ``m/<tensor>`` and ``v/<tensor>``, FedAvgM's momentum ``momentum/<i>`` (in the
        order of the unit's tensors); empty before the first aggregation and for the
        stateless rules."""
        if self.rule == "fedadam":
            m, v = self.strategy.m_t or {}, self.strategy.v_t or {}
            return {**{f"m/{k}": np.array(a) for k, a in m.items()}, **{f"v/{k}": np.array(a) for k, a in v.items()}}
        if self.rule == "fedavgm" and self.strategy.momentum_vector is not None:
            return {f"momentum/{i}": np.array(a) for i, a in enumerate(self.strategy.momentum_vector)}
        return {}

    def load_state(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Take back what :meth:`state` returned."""
        def part(prefix: str) -> dict[str, np.ndarray]:
            return {k[len(prefix):]: np.array(a) for k, a in arrays.items() if k.startswith(prefix)}

        if self.rule == "fedadam":
            self.strategy.m_t, self.strategy.v_t = part("m/") or None, part("v/") or None
        elif self.rule == "fedavgm":
            mom = part("momentum/")
            self.strategy.momentum_vector = [mom[str(i)] for i in range(len(mom))] if mom else None
