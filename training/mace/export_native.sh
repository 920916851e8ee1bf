#!/usr/bin/env bash
# Export a native MACE model file (mace-torch's .model) to a metatomic .pt that
# BodyOrderCalculator evaluates packed. Run in the MACE environment (training/mace/README).
# Usage: training/mace/export_native.sh NATIVE.model OUT.pt
set -euo pipefail
native=$(realpath "$1")
out=$(realpath -m "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# metatrain needs a dataset even for zero epochs: one H2 with an energy (never fitted:
# zero epochs, and no target scaling, so the model's own energies come out unchanged)
cat > dummy.xyz <<XYZ
2
Properties=species:S:1:pos:R:3:forces:R:3 energy=-2.1
H 0.0 0.0 0.0 0.0 0.0 0.0
H 1.0 0.0 0.0 0.0 0.0 0.0
XYZ
cat > export.yaml <<YAML
architecture:
  name: experimental.mace
  model:
    mace_model: $native
    mace_head_target: energy
  training:
    num_epochs: 0
    batch_size: 1
    # without this metatrain fits a scale to the dummy energy and every energy comes out
    # wrong (measured: 8.44 eV for an H atom the native model puts at -11.84 eV)
    scale_targets: false
training_set: dummy.xyz
validation_set: dummy.xyz
YAML
mtt train export.yaml -o "$out" > export.log 2>&1 || { cat export.log; exit 1; }
echo "wrote $out"
