"""The codec registry: every update and unit airfleet sends picks its codec here, by name.

Built-in names (options in parentheses, with their defaults; every codec also takes
``max_params=2**24``, the most elements a stream it decodes may declare):

- ``"fp32"``: raw float32, lossless (the reference);
- ``"fp16"``: IEEE half precision;
- ``"int8"``, ``"int4"``: uniform 8- / 4-bit per tensor, scale and offset per tensor;
- ``"qsgd"`` (``levels=16``, ``seed=0``): QSGD stochastic quantization, levels range coded;
- ``"topk"`` (``fraction=0.01``): top-k with error feedback, positions range coded;
- ``"sign"``: scaled sign with error feedback;
- ``"spike_slab"`` (``step=1e-3``, ``n_bins=256``, ``sigma=5e-2``, ``alpha=1000.0``,
  ``prior="spike_slab"``): the CSI decoder-update range coder (eq. 12-19);
- ``"nnc"`` (``qp=-38``): NNCodec's DeepCABAC (MPEG NNR), listed only when the optional
  ``nncodec`` package imports (see ``common.coding.nnc``).

What each codes and what it states (error bound, ideal bits) is in ``common.coding.codecs``;
the stream format and the codec contract in ``common.coding.codec_base``.

Plugins: a package adds codecs without editing airfleet through the entry point group
``airfleet.codecs``; each entry point's name is the codec name and its object a
:class:`Codec` subclass (or any callable ``(**options) -> Codec``)::

    [project.entry-points."airfleet.codecs"]
    my_half = "my_pkg.codec:MyHalf"

Example::

    >>> from common.coding.registry import make_codec
    >>> codec = make_codec("topk", fraction=0.05)
    >>> enc = codec.encode({"w": w}, residual=None)       # enc.data: bytes, enc.residual: next round's
    >>> codec.decode(enc.data)["w"].shape == w.shape
    True
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Callable
from typing import Any

from common.coding.codec_base import Body, Codec, Encoded, split
from common.coding.codecs import (
    Float16Codec,
    Float32Codec,
    Int4Codec,
    Int8Codec,
    QSGDCodec,
    SignCodec,
    SpikeSlabCodec,
    TopKCodec,
)
from common.coding.nnc import NNC_HINT, NNCodec, nnc_available

__all__ = [
    "Codec",
    "Encoded",
    "Body",
    "split",
    "ENTRY_POINT_GROUP",
    "BUILTIN_CODECS",
    "make_codec",
    "available_codecs",
    "check_codec_name",
]

#: the entry point group plugins register codecs under
ENTRY_POINT_GROUP = "airfleet.codecs"

#: registry name -> codec class, in the order ``available_codecs`` lists them
BUILTIN_CODECS: dict[str, type[Codec]] = {
    c.name: c for c in (Float32Codec, Float16Codec, Int8Codec, Int4Codec, QSGDCodec, TopKCodec, SignCodec, SpikeSlabCodec, NNCodec)
}

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,15}$")


def _plugins() -> dict[str, importlib.metadata.EntryPoint]:
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name: ep for ep in eps if _NAME.match(ep.name) and ep.name not in BUILTIN_CODECS}


def available_codecs() -> tuple[str, ...]:
    """Names :func:`make_codec` takes: the built-ins (``nnc`` only when ``nncodec`` imports),
    then the plugins of the ``airfleet.codecs`` entry point group, sorted."""
    builtins = tuple(n for n in BUILTIN_CODECS if n != "nnc" or nnc_available())
    return builtins + tuple(sorted(_plugins()))


def make_codec(name: str, **options: Any) -> Codec:
    """A codec by registry name, configured by ``options``.

    Parameters
    ----------
    name : str
        A built-in name or a plugin's entry point name.
    **options
        The codec's options (see the module docstring).

    Returns
    -------
    Codec

    Raises
    ------
    ValueError
        An unknown name (naming the available ones), ``nnc`` without ``nncodec`` installed
        (saying how to get it), a plugin that does not load or does not give a Codec, or
        options the codec refuses (``TypeError`` of an unknown option included).
    """
    if name == "nnc" and not nnc_available():
        raise ValueError(NNC_HINT)
    factory: Callable[..., Codec]
    if name in BUILTIN_CODECS:
        factory = BUILTIN_CODECS[name]
    else:
        plugins = _plugins()
        if name not in plugins:
            raise ValueError(f"unknown codec {name!r}; available: {', '.join(available_codecs())}")
        try:
            factory = plugins[name].load()
        except Exception as e:  # a broken plugin is the user's package: say which and why
            raise ValueError(f"codec plugin {name!r} ({plugins[name].value}) does not load: {type(e).__name__}: {e}") from e
    try:
        codec = factory(**options)
    except TypeError as e:
        raise ValueError(f"codec {name!r} does not take options {sorted(options)}: {e}") from e
    except ValueError:
        raise
    except Exception as e:  # a plugin's own failure: name it, in one line
        if name in BUILTIN_CODECS:
            raise
        raise ValueError(f"codec plugin {name!r} failed to build: {type(e).__name__}: {e}") from e
    if not isinstance(codec, Codec):
        raise ValueError(f"codec {name!r} gave a {type(codec).__name__}, not a common.coding.registry.Codec")
    if codec.name != name:
        raise ValueError(f"codec registered as {name!r} calls itself {codec.name!r}")
    return codec


def check_codec_name(name: object) -> str:
    """``name`` if :func:`make_codec` knows it; ``ValueError`` naming the available ones otherwise
    (for scenario validation: a scenario naming an unknown codec fails before round 1)."""
    if not isinstance(name, str) or name not in available_codecs():
        if name == "nnc":
            raise ValueError(NNC_HINT)
        raise ValueError(f"unknown codec {name!r}; available: {', '.join(available_codecs())}")
    return name
