"""Import of externally generated channels: round trips and clear errors on bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.io
import torch

from common.channels import ChannelTask, sample_channels
from common.channels.imported import channels_to_table, read_channels, table_to_channels, write_channels



def _H(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(shape, generator=g), torch.randn(shape, generator=g))


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".npy", ".mat"])
@pytest.mark.parametrize("shape", [(6, 4, 2), (5, 3, 4, 2)])
def test_round_trip_bit_exact(tmp_path: Path, suffix: str, shape: tuple[int, ...]) -> None:
    H = _H(shape)
    p = write_channels(tmp_path / f"h{suffix}", H)
    back, tid = read_channels(p)
    assert tid is None
    assert back.dtype == torch.complex64 and back.shape == H.shape
    assert torch.equal(back, H)


def test_table_layout_is_documented(tmp_path: Path) -> None:
    H = _H((3, 2, 4, 2))
    t = channels_to_table(H, task_ids=np.array([0, 1, 1]))
    assert t.column_names == ["real", "imag", "task_id"]
    assert t.schema.field("real").type == pa.list_(pa.float32(), 16)
    meta = t.schema.metadata
    assert meta[b"n_rx"] == b"4" and meta[b"n_tx"] == b"2" and meta[b"n_sc"] == b"2"
    # row-major over (sc, rx, tx)
    assert t.column("imag")[1].values[5].as_py() == pytest.approx(H[1, 0, 2, 1].imag.item())
    back, tid = table_to_channels(t)
    assert torch.equal(back, H) and tid.tolist() == [0, 1, 1]


def test_source_draws_rows_filters_tasks_and_normalises(tmp_path: Path) -> None:
    H = _H((40, 4, 2)) * 3.0
    tid = np.repeat([7, 8], 20)
    p = write_channels(tmp_path / "h.parquet", H, task_ids=tid)
    task = ChannelTask.make("imported", 4, 2, task_id=8, path=str(p))
    a = sample_channels(task, 20, seed=1)
    b = sample_channels(task, 20, seed=1)
    c = sample_channels(task, 20, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # every drawn row is one of task 8's rows, scaled by one constant: mean power 1 over them
    rows8 = H[20:]
    scale = rows8.abs().pow(2).mean().rsqrt()
    assert a.abs().pow(2).mean().item() == pytest.approx(1.0, rel=1e-5)  # all 20 rows drawn
    for row in a[:5]:
        assert any(torch.allclose(row, r * scale, atol=1e-5) for r in rows8)
    raw = sample_channels(ChannelTask.make("imported", 4, 2, task_id=8, path=str(p), normalise="none"), 3, seed=0)
    assert any(torch.equal(raw[0], r) for r in rows8)
    with pytest.raises(ValueError, match="replace=True"):
        sample_channels(task, 21, seed=0)
    assert sample_channels(ChannelTask.make("imported", 4, 2, task_id=8, path=str(p), replace=True), 50, seed=0).shape == (50, 4, 2)
    with pytest.raises(ValueError, match="task_id == 9"):
        sample_channels(ChannelTask.make("imported", 4, 2, task_id=9, path=str(p)), 2, seed=0)


def test_wideband_file(tmp_path: Path) -> None:
    H = _H((10, 6, 4, 2))
    p = write_channels(tmp_path / "w.npy", H)
    task = ChannelTask.make("imported", 4, 2, path=str(p), normalise="none")
    assert sample_channels(task, 3, seed=0, n_subcarriers=6).shape == (3, 6, 4, 2)
    nb = sample_channels(task, 10, seed=0)
    assert all(any(torch.equal(x, h) for h in H[:, 3]) for x in nb)  # the DC subcarrier, index 6 // 2
    with pytest.raises(ValueError, match="6 subcarriers"):
        sample_channels(task, 3, seed=0, n_subcarriers=8)


def test_axes_option_for_quadriga_order(tmp_path: Path) -> None:
    H = _H((5, 3, 4, 2))  # n, c, r, t
    q = H.permute(2, 3, 1, 0).numpy()  # QuaDRiGa-like [rx, tx, carriers, snapshots]
    scipy.io.savemat(tmp_path / "q.mat", {"coeff": q})
    back, _ = read_channels(tmp_path / "q.mat", variable="coeff", axes="rtcn")
    assert torch.equal(back, H)


def test_real_imag_last_axis(tmp_path: Path) -> None:
    H = _H((4, 3, 2))
    np.save(tmp_path / "ri.npy", np.stack([H.real.numpy(), H.imag.numpy()], axis=-1))
    back, _ = read_channels(tmp_path / "ri.npy")
    assert torch.equal(back, H)


def test_bad_files(tmp_path: Path) -> None:
    np.save(tmp_path / "real.npy", np.ones((4, 3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="expected a complex array"):
        read_channels(tmp_path / "real.npy")
    np.save(tmp_path / "rank.npy", np.ones((4, 3), dtype=np.complex64))
    with pytest.raises(ValueError, match="expected 3 axes"):
        read_channels(tmp_path / "rank.npy")
    np.save(tmp_path / "nan.npy", np.full((2, 3, 2), np.nan, dtype=np.complex64))
    with pytest.raises(ValueError, match="NaN"):
        read_channels(tmp_path / "nan.npy")
    scipy.io.savemat(tmp_path / "m.mat", {"G": np.ones((2, 3, 2), dtype=np.complex64)})
    with pytest.raises(ValueError, match=r"variable 'H' not found.*\['G'\]"):
        read_channels(tmp_path / "m.mat")
    with pytest.raises(ValueError, match="axes"):
        read_channels(tmp_path / "m.mat", variable="G", axes="nrx")
    (tmp_path / "junk.parquet").write_bytes(b"not a parquet file at all")
    with pytest.raises(ValueError, match="junk.parquet"):
        read_channels(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"real": [[1.0]], "imag": [[0.0]]}), tmp_path / "nometa.parquet")
    with pytest.raises(ValueError, match="metadata key 'n_rx'"):
        read_channels(tmp_path / "nometa.parquet")
    t = channels_to_table(_H((2, 3, 2))).replace_schema_metadata({"n_rx": "4", "n_tx": "2", "n_sc": "0"})
    pq.write_table(t, tmp_path / "width.parquet")
    with pytest.raises(ValueError, match=r"fixed_size_list<float32>\[8\]"):
        read_channels(tmp_path / "width.parquet")
    with pytest.raises(ValueError, match="no such file"):
        read_channels(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="unsupported suffix"):
        read_channels(tmp_path / "h.csv")
    p = write_channels(tmp_path / "ok.npy", _H((4, 3, 2)))
    with pytest.raises(ValueError, match="3x2 .*asks 4x2"):
        sample_channels(ChannelTask.make("imported", 4, 2, path=str(p)), 2, seed=0)
    with pytest.raises(ValueError, match="option 'path'"):
        sample_channels(ChannelTask.make("imported", 3, 2), 2, seed=0)
