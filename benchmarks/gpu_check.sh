#!/usr/bin/env bash
# One-command GPU check (issue #12, item 5): the learngene study at the paper's geometry
# and per-task sizes (Table III: 32x8, 8,100 samples per task, batch 500, N_conv 12 / 8)
# with fewer tasks and epochs so it ends in a few minutes on one GPU, and the quickstart
# fleet with its collective model on CUDA and every device class fine-tuning on CUDA
# (`device = "cuda"` per class), each device asking Ray for a quarter GPU, and the CSI
# feedback study at the paper's 64x64 geometry with shorter training.
# Prints wall times and the SER figures. Needs a CUDA machine; CPU-only machines stop at
# the first line with a message.
#
#     bash benchmarks/gpu_check.sh            # from the repository root
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
$PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_check: torch sees no CUDA device")'
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

cat > "$TMP/learngene_gpu.toml" <<TOML
# GPU check: learngene study at the paper's geometry and per-task sizes, fewer tasks/epochs
name = "gpu_check_learngene"
seed = 2025
[study]
kind = "learngene_paper"
scale = "reduced"
n_r = 32
n_t = 8
collective_tasks = 10         # paper: 50
target_tasks = 2              # paper: 5
collective_samples = 8100
collective_epochs = 10        # paper: 50
individual_samples = 8100
individual_epochs = 40        # paper: 200
val_samples = 900
test_samples = 1000
batch_size = 500
device = "cuda"
TOML
cat > "$TMP/csi_gpu.toml" <<TOML
# GPU check: CSI feedback at the paper's geometry (64x64 CSI, 64 kernels, lr 1e-4) with
# shorter pre-training and 50 fine-tuning epochs (paper: 1,000), two backbones
name = "gpu_check_csi"
seed = 2025
[study]
kind = "csi_feedback_paper"
n_ant = 64
n_sc = 64
width = 64
pretrain_samples = 4000
pretrain_steps = 3000
backbone_lmbdas = [2.0, 512.0]
lmbdas = [32.0, 512.0]
epochs = 50
lr = 1e-4
n_bins_sweep = [64]
intervals_m = [4.0, 16.0]
track_m = 32.0
device = "cuda"
TOML
sed -e 's/^name = "quickstart"/name = "gpu_check_fleet"/' \
    -e 's/^cpus_per_device = 1.0/cpus_per_device = 1.0\ngpus_per_device = 0.25\ndevice = "cuda"/' \
    -e 's/^\[\[fleet\]\].*$/[[fleet]]\ndevice = "cuda"/' \
    scenarios/quickstart.toml > "$TMP/fleet_gpu.toml"

t0=$(date +%s)
.venv/bin/airfleet run "$TMP/learngene_gpu.toml" --runs-dir "$TMP/runs" --quiet
t1=$(date +%s)
.venv/bin/airfleet run "$TMP/fleet_gpu.toml" --runs-dir "$TMP/runs" --quiet
t2=$(date +%s)
.venv/bin/airfleet run "$TMP/csi_gpu.toml" --runs-dir "$TMP/runs" --quiet
t3=$(date +%s)
$PY - "$TMP/runs" "$((t1 - t0))" "$((t2 - t1))" "$((t3 - t2))" <<'PYEOF'
import json, pathlib, sys
runs, t_study, t_fleet, t_csi = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = next(runs.glob("gpu_check_learngene*/learngene_summary.json"), None)
out = {"learngene_study_s": t_study, "fleet_s": t_fleet}
if s is not None:
    out["learngene_ser_at_train_snr"] = json.loads(s.read_text())["ser_at_train_snr"]
f = next(runs.glob("gpu_check_fleet*/summary.json"), None)
if f is not None:
    out["fleet_classes"] = [{k: c.get(k) for k in ("class", "ser", "ser_zf", "ser_mmse")} for c in json.loads(f.read_text()).get("classes", [])]
c = next(runs.glob("gpu_check_csi*/summary.json"), None)
out["csi_study_s"] = t_csi
if c is not None:
    out["csi_rd"] = [{k: r[k] for k in ("scheme", "lmbda", "nmse_db", "bits_per_dim_total")} for r in json.loads(c.read_text())["rd"] if r["experiment"] == "schemes"]
print(json.dumps(out, indent=1, default=float))
PYEOF
