"""Interpolate the weights of two exported PETs fine-tuned from the same start, and print
each mix's dense validation and test errors (a 'model soup'; README, attempts).

    python training/experiments/interpolate_weights.py A.pt B.pt 0 0.25 0.5 0.75 1

Each mix is (1 - alpha) * A + alpha * B, weight by weight; splits from training/splits/.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import ase.io

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "training"))


def main() -> None:
    from metatomic.torch import load_atomistic_model

    from model_card import errors

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("alphas", type=float, nargs="+")
    args = parser.parse_args()
    weights_a = load_atomistic_model(str(args.a)).state_dict()
    weights_b = load_atomistic_model(str(args.b)).state_dict()
    splits = {name: ase.io.read(ROOT / f"training/splits/{name}.extxyz", ":") for name in ("val", "test")}
    with tempfile.TemporaryDirectory() as folder:
        for alpha in args.alphas:
            model = load_atomistic_model(str(args.a))
            model.load_state_dict(
                {
                    # integer buffers (e.g. species maps) are the same in both
                    k: (1 - alpha) * w + alpha * weights_b[k] if w.is_floating_point() else w
                    for k, w in weights_a.items()
                }
            )
            path = Path(folder) / f"mix-{alpha}.pt"
            model.save(str(path))
            line = [f"alpha {alpha:.2f}"]
            for name, frames in splits.items():
                high = errors(path, frames)["high"]
                line.append(f"{name} dense {high['energy_rmse_meV_per_atom']:.2f} meV/atom {high['force_rmse_eV_per_A']:.3f} eV/A")
            print(" | ".join(line), flush=True)


if __name__ == "__main__":
    main()
