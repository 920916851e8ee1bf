"""Write the exports of the default PET's training stages, as shipped in git history,
to a folder (stage1.pt ... stage6.pt), for `ase-bodyorder compare --learning`.

Stages 1, 2, 3, 5 and 6 were each shipped as ase_bodyorder/models/pet-h-fci.pt at some
commit (training/pet/stages; stage 4 never was). Needs a clone with history.

Usage: python scripts/pet_stage_exports.py FOLDER
       ase-bodyorder compare --model FOLDER/stage1.pt ... --model FOLDER/stage6.pt --learning -o pet_stages.png
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: stage -> the commit that shipped it (its message names the stage)
STAGES = {1: "be1dfc8", 2: "094285d", 3: "76915ea", 5: "ffdc014", 6: "ad743df"}


def main() -> None:
    folder = Path(sys.argv[1])
    folder.mkdir(parents=True, exist_ok=True)
    for stage, commit in STAGES.items():
        blob = subprocess.run(["git", "show", f"{commit}:ase_bodyorder/models/pet-h-fci.pt"], cwd=ROOT,
                              capture_output=True, check=True).stdout
        (folder / f"stage{stage}.pt").write_bytes(blob)
        print(f"stage {stage}: {commit}, {len(blob)} bytes, sha256 {hashlib.sha256(blob).hexdigest()[:12]}")


if __name__ == "__main__":
    main()
