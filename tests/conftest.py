"""Shared test set-up.

- One torch intra-op thread for the whole session: numbers do not depend on the
  machine's core count, and tests do not oversubscribe a 2-core machine.
- The artifact cache (channels, collective models, CSI backbones) in a temporary folder
  for the session (``$AIRFLEET_CACHE_DIR``, which Ray workers inherit), so tests never
  read or write the user's ``~/.cache/airfleet``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from common.runtime import CACHE_ENV, torch_threads


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    with torch_threads(1):
        yield


@pytest.fixture(scope="session", autouse=True)
def temporary_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    prev = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("airfleet-cache"))
    yield
    if prev is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = prev
