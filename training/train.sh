#!/usr/bin/env bash
# Train, export and card one shipped model. Usage: training/train.sh pet|soap-bpnn|mace [THREADS]
# Needs the train extra: pip install -e ".[train]" (metatrain, PySCF).
# A model with a file training/<arch>/stages is trained in stages: each line names an
# options file, the pool it sees (its first N structures, or all) and optionally a run name
# (default: the options file's stem, so one options file can serve several stages). Each
# stage runs in runs/<arch>/<run>/ and fine-tunes the previous stage's checkpoint
# (train.sh sets finetune.read_from to it).
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
previous=
while read -r options pool name; do
    [ -n "$options" ] || continue
    if [ "$pool" = all ]; then python prepare_splits.py; else python prepare_splits.py --first "$pool"; fi
    run="runs/$arch/${name:-${options%.yaml}}"
    mkdir -p "$run"
    rm -rf "$run/splits" && cp -r splits "$run/"
    overrides=()
    [ -z "$previous" ] || overrides=(-r "architecture.training.finetune.read_from=../$previous/model.ckpt")
    # writes model.pt (the exported best model) and model.ckpt
    (cd "$run" && mtt train "$root/training/$arch/$options" -o model.pt "${overrides[@]}" > train.log 2>&1)
    options_files+=("$root/training/$arch/$options")
    previous=$(basename "$run")
    last_pool=$pool
done <<< "$stages"
# the card counts the splits of the pool the last stage saw
card_pool=()
notes=$(cat "$root/training/$arch/notes" 2>/dev/null || true)
[ "$last_pool" = all ] || card_pool=(--trained-on-first "$last_pool")
name="$arch-h-fci"  # pet-h-fci, soap-bpnn-h-fci, mace-h-fci
cp "$run/model.pt" "$root/ase_bodyorder/models/$name.pt"
python "$root/training/model_card.py" "$name" "$root/ase_bodyorder/models/$name.pt" "${options_files[@]}" "${card_pool[@]}" \
    --training-notes "$notes" --architecture "$(head -1 "$root/training/$arch/README" 2>/dev/null || echo "$arch")"
