"""Shared test set-up.

- One torch intra-op thread for the whole session: numbers do not depend on the
  machine's core count, and tests do not oversubscribe a 2-core machine.
- The artifact cache (channels, collective models, CSI backbones) in a temporary folder
  for the session (``$AIRFLEET_CACHE_DIR``, which Ray workers inherit), so tests never
  read or write the user's ``~/.cache/airfleet``.
- ``record_redraws``: the channels each ``Redraw`` epoch was drawn over (shared by the
  study's and the device's redrawn-noise tests).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

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


@contextlib.contextmanager
def _recording_redraws() -> Iterator[list]:
    import common.learngene.training as training

    seen: list = []
    real = training.make_detection_batch

    def recording(H, *a, **k):  # type: ignore[no-untyped-def]
        seen.append(H)
        return real(H, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "make_detection_batch", recording)
        yield seen


@pytest.fixture
def record_redraws() -> Callable[[], contextlib.AbstractContextManager[list]]:
    """``with record_redraws() as seen:`` lists the channels ``H`` every ``Redraw`` inside
    the block drew its epoch over (``common.learngene.training.make_detection_batch``)."""
    return _recording_redraws
