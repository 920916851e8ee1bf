#!/usr/bin/env bash
# The implicit model beside the linear ones (issue: explicit body order, experiment 1):
# SOAP-BPNN trained with and without the dimers, everything else equal.
#
# Both runs see the pool's first 2961 structures (the shipped soap-bpnn-h-fci's pool:
# the isolated atom, 320 dimers, clusters of 3-8 atoms), its train and val splits, with
# training/soap-bpnn/options.yaml and EPOCHS epochs (time-boxed: about an hour in all on
# one CPU thread); "without" drops the dimers from both splits. Writes
# training/runs/soap-bpnn-dimers/{with,without}/model.pt. Needs metatrain
# (pip install -e ".[train]"). Usage: training/linear/soap_bpnn_dimers.sh [EPOCHS] [THREADS]
set -euo pipefail
epochs=${1:-150}
threads=${2:-1}
root=$(cd "$(dirname "$0")/../.." && pwd)
export OMP_NUM_THREADS=$threads
cd "$root/training"
python prepare_splits.py --first 2961
for makeup in with without; do
    run="runs/soap-bpnn-dimers/$makeup"
    [ -f "$run/model.pt" ] && continue
    mkdir -p "$run/splits"
    for split in train val test; do
        python - "$split" "$makeup" "$run" <<'PY'
import sys, ase.io
split, makeup, run = sys.argv[1:]
frames = ase.io.read(f"splits/{split}.extxyz", ":")
if makeup == "without":
    frames = [a for a in frames if len(a) != 2]
ase.io.write(f"{run}/splits/{split}.extxyz", frames)
print(makeup, split, len(frames))
PY
    done
    start=$(date +%s)
    (cd "$run" && mtt train "$root/training/soap-bpnn/options.yaml" -o model.pt \
        -r "architecture.training.num_epochs=$epochs" > train.log 2>&1)
    echo "$makeup: $(( $(date +%s) - start )) s for $epochs epochs on $threads thread(s)" | tee "$run/time.txt"
done
