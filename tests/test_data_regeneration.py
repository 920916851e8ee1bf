"""The FCI pool regenerates from the repository alone: every structure, drawn from the seeds
in scripts/generate_fci_references.py with the committee blocks taken from the choices
recorded in data/committee_choices.json (no committee models, no git history, no FCI), and
rendered as the generator writes the pool with the committed labels, is byte-identical to
data/fci_h_clusters.extxyz. ``generate_fci_references.py --check-reproduces`` does the same
with the generator's own label reuse."""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
from pathlib import Path

import ase.io
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
POOL = DATA / "fci_h_clusters.extxyz"


def _load_generator():
    spec = importlib.util.spec_from_file_location("generate_fci_references", ROOT / "scripts" / "generate_fci_references.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generator = _load_generator()


def _no_subprocess(*args, **kwargs):
    raise AssertionError(f"the regeneration path started a process: {args}")


@pytest.fixture(scope="module")
def choices():
    return generator.load_committee_choices(DATA / "committee_choices.json")


@pytest.fixture(scope="module")
def structures(choices):
    """Every structure of the pool, regenerated with no process started (so no git)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "run", _no_subprocess)
        patch.setattr(subprocess, "Popen", _no_subprocess)
        return generator.build_structures(choices)


@pytest.fixture(scope="module")
def committed():
    """The committed pool's positions, energies and forces, read from its columns (species,
    3 positions, 3 forces) and its ``energy=``; 20x faster than ase.io.read, and the byte
    comparison checks everything the reading could get wrong."""
    lines = POOL.read_bytes().split(b"\n")
    frames, i = [], 0
    while i < len(lines) and lines[i]:
        n = int(lines[i])
        energy = float(re.search(rb"(?:^| )energy=(\S+)", lines[i + 1]).group(1))
        table = np.array([line.split()[1:] for line in lines[i + 2 : i + 2 + n]], dtype=float)
        frames.append({"positions": table[:, :3], "energy": energy, "forces": table[:, 3:]})
        i += n + 2
    return frames


def _differ(structure: dict, frame: dict) -> bool:
    return structure["positions"].shape != frame["positions"].shape or not np.all(
        np.abs(structure["positions"] - frame["positions"]) <= 1e-8
    )


def test_settings_file_is_the_generators(choices):
    assert (DATA / "fci_settings.json").read_text() == generator.settings_text()
    for name in generator.COMMITTEE_BLOCKS:
        for key in ("seed", "density", "sizes", "candidates_per_size", "per_size"):
            assert choices[name][key] == generator.SETTINGS[name][key]


def test_pool_regenerates_byte_for_byte(structures, committed, tmp_path):
    assert len(structures) == len(committed)
    moved = [i for i, (s, frame) in enumerate(zip(structures, committed)) if _differ(s, frame)]
    assert not moved, f"{len(moved)} structures differ, first {moved[0]} (block {structures[moved[0]]['block']})"
    rendered = tmp_path / POOL.name
    labels = [{"energy": frame["energy"], "forces": frame["forces"]} for frame in committed]
    generator.write_pool(generator.pool_frames(structures, labels), rendered)
    new, old = rendered.read_bytes(), POOL.read_bytes()
    if new != old:  # say where, not the whole 10 MB
        at = next((i for i, (a, b) in enumerate(zip(new, old)) if a != b), min(len(new), len(old)))
        line = old.count(b"\n", 0, at) + 1
        pytest.fail(f"the regenerated pool differs from byte {at} (line {line}): "
                    f"{new[at - 80:at + 80]!r} against {old[at - 80:at + 80]!r}")


def test_labels_are_reused_by_geometry(structures, committed):
    """The generator's label reuse (``pool_labels``, which ``--check-reproduces`` and the
    labelling stage use) on the committee blocks: every label found at its index, the
    committed values, and none for a structure moved by 1e-6 A."""
    start = structures.index(next(s for s in structures if s["block"] == generator.COMMITTEE_BLOCKS[0]))
    stop = start + sum(len(generator.SETTINGS[name]["sizes"]) * generator.SETTINGS[name]["per_size"]
                       for name in generator.COMMITTEE_BLOCKS)
    assert {s["block"] for s in structures[start:stop]} == set(generator.COMMITTEE_BLOCKS)
    frames = ase.io.read(POOL, index=f"{start}:{stop}")
    part = [dict(s) for s in structures[start:stop]]
    part[5]["positions"] = part[5]["positions"] + 1e-6
    labels = generator.pool_labels(part, frames)
    assert sorted(labels) == [i for i in range(stop - start) if i != 5]
    for i, label in labels.items():
        assert label["energy"] == committed[start + i]["energy"]
        assert np.array_equal(label["forces"], committed[start + i]["forces"])


def test_committee_blocks_follow_the_recorded_choices(choices, structures, committed):
    """A wrong recorded choice changes the pool: one chosen index swapped for an unchosen
    candidate of the same size gives exactly that structure unlike the committed one; a
    repeated index is refused."""
    name = generator.COMMITTEE_BLOCKS[0]
    block = generator.SETTINGS[name]
    start = next(i for i, s in enumerate(structures) if s["block"] == name)
    wrong = copy.deepcopy(choices)
    chosen = wrong[name]["chosen"]
    # candidates are drawn size by size, candidates_per_size of each
    size_of = lambda index: block["sizes"][index // block["candidates_per_size"]]  # noqa: E731
    chosen[7] = next(i for i in range(len(block["sizes"]) * block["candidates_per_size"])
                     if i not in chosen and size_of(i) == size_of(chosen[7]))
    clusters = generator.committee_block_clusters(name, wrong)
    assert [i for i, c in enumerate(clusters) if _differ(c, committed[start + i])] == [7]
    chosen[7] = chosen[8]
    with pytest.raises(ValueError):
        generator.committee_block_clusters(name, wrong)


def test_check_reproduces_finds_a_changed_byte(structures, committed, tmp_path, monkeypatch):
    """``--check-reproduces`` on a small pool (its first 40 structures): it reproduces, and a
    pool with one byte changed or a structure missing does not."""
    monkeypatch.setattr(generator, "build_structures", lambda choices=None: structures[:40])
    (tmp_path / "fci_settings.json").write_text(generator.settings_text())
    pool = tmp_path / "fci_h_clusters.extxyz"
    labels = [{"energy": frame["energy"], "forces": frame["forces"]} for frame in committed[:40]]
    generator.write_pool(generator.pool_frames(structures[:40], labels), pool)
    assert generator.check_reproduces(tmp_path, {}) == []
    text = pool.read_text()
    pool.write_text(text.replace("split=train", "split=tran", 1))
    assert len(generator.check_reproduces(tmp_path, {})) == 1
    generator.write_pool(generator.pool_frames(structures[:39], labels[:39]), pool)
    assert len(generator.check_reproduces(tmp_path, {})) == 2  # 39 structures, one unlabelled
