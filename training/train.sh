#!/usr/bin/env bash
# Train, export and card one shipped model. Usage: training/train.sh pet|soap-bpnn [THREADS]
# Needs the train extra: pip install -e ".[train]" (metatrain, PySCF).
set -euo pipefail
arch=$1
threads=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/training"
[ -f splits/train.extxyz ] || python prepare_splits.py
run="runs/$arch"
mkdir -p "$run"
cp splits -r "$run/" 2>/dev/null || true
cd "$run"
export OMP_NUM_THREADS=$threads
# writes model.pt (the exported best model) and model.ckpt
mtt train "$root/training/$arch/options.yaml" -o model.pt > train.log 2>&1
name=$( [ "$arch" = pet ] && echo pet-h-fci || echo soap-bpnn-h-fci )
cp model.pt "$root/ase_bodyorder/models/$name.pt"
python "$root/training/model_card.py" "$name" "$root/ase_bodyorder/models/$name.pt" "$root/training/$arch/options.yaml" \
    --architecture "$(head -1 "$root/training/$arch/README" 2>/dev/null || echo "$arch")"
