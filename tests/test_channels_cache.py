"""The channel cache: hits on the second call, detects corruption, keys on the spec."""

from __future__ import annotations

from pathlib import Path

import torch

from common.channels import ChannelTask, register_source, sample_channels
from common.channels.cache import cache_path, cached_channels


CALLS: list[int] = []


@register_source("counting-rayleigh")
def counting_rayleigh(task: ChannelTask, n: int, seed: int, n_subcarriers: int | None = None) -> torch.Tensor:
    """The rayleigh source, counting its calls (a real registered source, for the cache test)."""
    CALLS.append(n)
    return sample_channels(ChannelTask.make("rayleigh", task.n_rx, task.n_tx, task.task_id, task.seed), n, seed, n_subcarriers)


def test_second_call_reads_cache(tmp_path: Path) -> None:
    CALLS.clear()
    task = ChannelTask.make("counting-rayleigh", 4, 2, task_id=1)
    a = cached_channels(task, 16, seed=3, cache_dir=tmp_path)
    assert CALLS == [16]
    b = cached_channels(task, 16, seed=3, cache_dir=tmp_path)
    assert CALLS == [16]  # not generated again
    assert torch.equal(a, b) and b.dtype == torch.complex64
    assert cache_path(task, 16, 3, None, tmp_path).is_file()
    # another seed, size or subcarrier count is another entry
    cached_channels(task, 16, seed=4, cache_dir=tmp_path)
    cached_channels(task, 8, seed=3, cache_dir=tmp_path)
    w = cached_channels(task, 8, seed=3, n_subcarriers=5, cache_dir=tmp_path)
    assert w.shape == (8, 5, 4, 2)
    assert CALLS == [16, 16, 8, 8]
    assert torch.equal(cached_channels(task, 8, seed=3, n_subcarriers=5, cache_dir=tmp_path), w)
    assert CALLS == [16, 16, 8, 8]
    # no temporary files are left behind
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_and_truncated_files_are_regenerated(tmp_path: Path) -> None:
    CALLS.clear()
    task = ChannelTask.make("counting-rayleigh", 4, 2, task_id=2)
    a = cached_channels(task, 32, seed=0, cache_dir=tmp_path)
    path = cache_path(task, 32, 0, None, tmp_path)
    raw = bytearray(path.read_bytes())
    # flip bytes inside the sample data (the middle of the file): checksum must fail
    mid = len(raw) // 2
    raw[mid : mid + 8] = bytes(b ^ 0xFF for b in raw[mid : mid + 8])
    path.write_bytes(bytes(raw))
    b = cached_channels(task, 32, seed=0, cache_dir=tmp_path)
    assert CALLS == [32, 32] and torch.equal(a, b)
    # truncated file
    path.write_bytes(path.read_bytes()[:100])
    c = cached_channels(task, 32, seed=0, cache_dir=tmp_path)
    assert CALLS == [32, 32, 32] and torch.equal(a, c)
    # and the regenerated file is good again
    cached_channels(task, 32, seed=0, cache_dir=tmp_path)
    assert CALLS == [32, 32, 32]


def test_default_dir_from_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("AIRFLEET_CACHE_DIR", str(tmp_path / "env-cache"))
    task = ChannelTask.make("rayleigh", 2, 2)
    cached_channels(task, 4, seed=0)
    assert list((tmp_path / "env-cache" / "channels").glob("rayleigh-*.arrow"))


def test_gbsm_cached_equals_generated(tmp_path: Path) -> None:
    task = ChannelTask.make("gbsm", 8, 2, task_id=3)
    assert torch.equal(cached_channels(task, 10, seed=1, cache_dir=tmp_path), sample_channels(task, 10, seed=1))


def test_concurrent_writers_leave_one_valid_file(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    task = ChannelTask.make("gbsm", 8, 2, task_id=5)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: cached_channels(task, 64, seed=0, cache_dir=tmp_path), range(4)))
    assert all(torch.equal(r, results[0]) for r in results)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith(".arrow")  # no temp files left
    CALLS.clear()
    assert torch.equal(cached_channels(task, 64, seed=0, cache_dir=tmp_path), results[0])


def test_imported_file_change_invalidates_cache(tmp_path: Path) -> None:
    import os

    from common.channels.imported import write_channels

    f = tmp_path / "h.npy"
    write_channels(f, torch.ones(4, 2, 2, dtype=torch.complex64))
    task = ChannelTask.make("imported", 2, 2, path=str(f), normalise="none")
    a = cached_channels(task, 4, seed=0, cache_dir=tmp_path / "c")
    assert torch.equal(a, torch.ones(4, 2, 2, dtype=torch.complex64))
    write_channels(f, 2 * torch.ones(4, 2, 2, dtype=torch.complex64))
    os.utime(f, ns=(1, 10**18))  # a different mtime even on coarse-clock filesystems
    b = cached_channels(task, 4, seed=0, cache_dir=tmp_path / "c")
    assert torch.equal(b, 2 * torch.ones(4, 2, 2, dtype=torch.complex64))
