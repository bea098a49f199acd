"""Small fleet scenarios for the Flower integration tests (real apps, tiny sizes)."""

from __future__ import annotations

from pathlib import Path


def tiny_fleet(path: Path, cache_dir: Path, *, counts: tuple[int, int] = (2, 2), rounds: int = 2, crash_b: bool = True) -> Path:
    """Two device classes of different model sizes; class ``b`` crashes in round 1."""
    crash = "crash_rounds = [1]" if crash_b else ""
    path.write_text(
        f"""
name = "tiny"
seed = 11
rounds = {rounds}
[channels]
source = "gbsm"
[manufacturer]
tasks = 2
samples_per_task = 200
epochs_per_task = 1
batch_size = 100
[server]
cache_dir = "{cache_dir}"
round_timeout_s = 600.0
[[fleet]]
name = "a"
count = {counts[0]}
n_conv = 8
train_samples = 100
val_samples = 200
epochs = 1
batch_size = 50
tasks = [100]
[[fleet]]
name = "b"
count = {counts[1]}
n_conv = 4
n_tx = 4
train_samples = 100
val_samples = 200
epochs = 1
batch_size = 50
tasks = [101]
{crash}
"""
    )
    return path
