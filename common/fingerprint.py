"""Fingerprints of the code that produces a cached artifact.

A cache key made of settings alone lets an artifact trained by older code be reused after
the code changed (issue #12, item 8: a CSI backbone cache under an unchanged key). Every
artifact cache key (channels, the collective model, the CSI backbones) therefore also
hashes the source files of the modules that compute it: any edit there gives a new key.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

__all__ = ["code_fingerprint"]


def _files(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"no module or package named {name!r}")
    origin = Path(spec.origin)
    if spec.submodule_search_locations:  # a package: every .py below it
        return sorted(p for p in origin.parent.rglob("*.py") if "__pycache__" not in p.parts)
    return [origin]


@lru_cache(maxsize=None)
def code_fingerprint(*names: str) -> str:
    """16-hex-char BLAKE2b digest of the source of the dotted modules/packages ``names``.

    Parameters
    ----------
    *names : str
        Dotted names, e.g. ``"common.learngene"`` (a package: all its ``.py`` files) or
        ``"common.models.sdnet"`` (one module).

    Returns
    -------
    str
        Changes whenever a byte of one of those files (or the set of files) changes.
    """
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(set(names)):
        for p in _files(name):
            h.update(f"{name}:{p.name}:".encode())
            h.update(p.read_bytes())
    return h.hexdigest()
