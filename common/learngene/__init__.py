"""Learngene (Zhang et al., "Efficient Deployment of Deep MIMO Detection Using Learngene",
2025): the manufacturer's collective SDNet trained over many channel tasks, the gradient
significance that picks its learngene unit, the unit itself, and its expansion into
individual models of any size.

Modules: ``training`` (the SDNet training loop both the collective and devices run),
``collective`` (sequential training over tasks, with its cache), ``significance``
(eq. 19-20 and the unit's selection), ``unit`` (tensors, metadata, file format),
``expansion`` (strategies, placement, eq. 21 anchors, the upsampling adaptor).
"""

from common.learngene.expansion import (
    STRATEGIES,
    expand,
    individual_sdnet,
    l2_to_anchors,
    placement,
    unit_source_layers,
    upsample_factor,
)
from common.learngene.unit import (
    UNIT_VERSION,
    LearngeneUnit,
    content_hash,
    extract_unit,
    read_array_file,
    segment_layer_ids,
    write_array_file,
)

__all__ = [
    "UNIT_VERSION",
    "STRATEGIES",
    "LearngeneUnit",
    "extract_unit",
    "segment_layer_ids",
    "unit_source_layers",
    "placement",
    "expand",
    "l2_to_anchors",
    "upsample_factor",
    "individual_sdnet",
    "write_array_file",
    "read_array_file",
    "content_hash",
]
