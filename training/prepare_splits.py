"""Split the FCI pool (data/fci_h_clusters.extxyz) by its recorded ``split`` tag.

Writes training/splits/{train,val,test}.extxyz and the committed test split used by the
tests and the model cards, tests/data/fci_test_split.extxyz. ``--first N`` uses only the pool's
first N structures for training/splits (training/train.sh runs the stages listed in
training/<arch>/stages, each on a pool: all, or its first N); the committed test split always
holds every test structure of the whole pool, since no model trains on any of them.
"""

import argparse
from pathlib import Path

import ase.io

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first", type=int, default=None, help="use only the pool's first N structures")
    pool = ase.io.read(ROOT / "data/fci_h_clusters.extxyz", ":")
    frames = pool[: parser.parse_args().first]
    out = ROOT / "training/splits"
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        chosen = [a for a in frames if a.info["split"] == split]
        ase.io.write(out / f"{split}.extxyz", chosen)
        print(f"{split}: {len(chosen)} structures")
    (ROOT / "tests/data").mkdir(parents=True, exist_ok=True)
    ase.io.write(ROOT / "tests/data/fci_test_split.extxyz", [a for a in pool if a.info["split"] == "test"])


if __name__ == "__main__":
    main()
