"""Cache keys cover the code that produces the artifact (issue #12, item 8)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from common.fingerprint import code_fingerprint


def test_fingerprint_changes_with_the_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "fp_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_fingerprint("fp_pkg")
    assert code_fingerprint("fp_pkg.a") != before  # the module alone is another set of files
    (pkg / "a.py").write_text("X = 2\n")
    code_fingerprint.cache_clear()
    after = code_fingerprint("fp_pkg")
    assert after != before and len(after) == 16
    (pkg / "b.py").write_text("")
    code_fingerprint.cache_clear()
    assert code_fingerprint("fp_pkg") != after  # a new file counts
    sys.modules.pop("fp_pkg", None)
    with pytest.raises(ValueError):
        code_fingerprint("no_such_module_xyz")


def test_artifact_keys_name_their_training_code() -> None:
    from common.csi.pretrain import PRETRAIN_CODE
    from common.learngene.collective import TRAINING_CODE

    assert {"common.learngene", "common.models.sdnet", "common.phy"} <= set(TRAINING_CODE)
    assert {"common.csi", "common.models.csi_compressor"} <= set(PRETRAIN_CODE)
