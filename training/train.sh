#!/usr/bin/env bash
# Train, export and card one shipped model. Usage: training/train.sh pet|soap-bpnn [THREADS]
# Needs the train extra: pip install -e ".[train]" (metatrain, PySCF).
# A model with a file training/<arch>/stages is trained in stages: each line names an
# options file and the pool it sees (its first N structures, or all); each stage runs in
# runs/<arch>/<options file stem>/ and fine-tunes the previous stage's checkpoint.
set -euo pipefail
arch=$1
threads=${2:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/training"
export OMP_NUM_THREADS=$threads
if [ -f "$arch/stages" ]; then
    stages=$(grep -v '^#' "$arch/stages")
else
    stages="options.yaml all"
fi
options_files=()
while read -r options pool; do
    [ -n "$options" ] || continue
    if [ "$pool" = all ]; then python prepare_splits.py; else python prepare_splits.py --first "$pool"; fi
    run="runs/$arch/${options%.yaml}"
    mkdir -p "$run"
    rm -rf "$run/splits" && cp -r splits "$run/"
    # writes model.pt (the exported best model) and model.ckpt
    (cd "$run" && mtt train "$root/training/$arch/$options" -o model.pt > train.log 2>&1)
    options_files+=("$root/training/$arch/$options")
    last_pool=$pool
done <<< "$stages"
# the card counts the splits of the pool the last stage saw
card_pool=()
notes=$(cat "$root/training/$arch/notes" 2>/dev/null || true)
[ "$last_pool" = all ] || card_pool=(--trained-on-first "$last_pool")
name=$( [ "$arch" = pet ] && echo pet-h-fci || echo soap-bpnn-h-fci )
cp "$run/model.pt" "$root/ase_bodyorder/models/$name.pt"
python "$root/training/model_card.py" "$name" "$root/ase_bodyorder/models/$name.pt" "${options_files[@]}" "${card_pool[@]}" \
    --training-notes "$notes" --architecture "$(head -1 "$root/training/$arch/README" 2>/dev/null || echo "$arch")"
