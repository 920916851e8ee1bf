"""Reference PBE dimer binding curves (C-C, Si-Si, C-H, Si-H, H-H) from PySCF.

The reference for comparing a universal MLIP trained on PBE data (SevenNet-0, MPtrj) with
the functional it learned: for each pair, the binding energy E(AB) - E(A) - E(B) (eV) on a
grid of distances, spin-unrestricted Kohn-Sham (``dft.UKS``, xc = PBE) in a named Gaussian
basis, taking at each distance the lowest-energy state over the plausible spin states
(``PAIRS``). The isolated atoms are computed with the same functional, basis and grids, in
their lowest spin state over ``ATOM_SPINS`` (H doublet, C and Si triplets).

How each state is converged (``solve``): DIIS from the initial guess; if that fails, a
level shift with damping, then the second-order (Newton) solver; once converged, an
internal stability analysis, and while it finds a lower solution the SCF is restarted
from there (``SETTINGS["max_stability_restarts"]``). Each spin state of each pair is
scanned twice, each distance starting from the previous distance's converged density:

- ``in``: from the longest distance to the shortest, starting from the superposition of
  the converged atoms (spin-polarised fragments whose spins add up to the dimer's, the
  lowest such pair of atomic states: e.g. a broken-symmetry singlet from two triplet
  carbons with opposite spins), so the dissociation limit is the atoms';
- ``out``: from the shortest distance to the longest, starting from PySCF's ``minao``
  guess.

The energy of a spin state at a distance is the lower converged one of the two scans; the
chosen state is the spin state of lowest energy. Every SCF is recorded (energy, converged,
<S^2>, stability restarts, fallbacks) in a JSONL cache next to the output
(``.pbe_dimers.cache.jsonl``; the last density of each scan in ``.pbe_dimers.cache.d/``), so
an interrupted run resumes where it stopped. Neither is meant to be committed.

The shipped ase_bodyorder/references/pbe_dimers.json (def2-TZVP, grids level 3, PySCF 2.14)
took 81 minutes on one core: 1274 dimer SCFs (C2 and Si2 two thirds of it) and 7 atoms.

Usage: python scripts/dft_dimer_curves.py [--pairs H-H C-H] [--out FILE] [--threads 1]
       python scripts/dft_dimer_curves.py --probe      # time one point per spin of C2, Si2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "ase_bodyorder" / "references" / "pbe_dimers.json"

SETTINGS = {
    "xc": "PBE",
    "basis": "def2-TZVP",
    "grids_level": 3,  # PySCF's default; level 4 moves Si2's total energy by 3e-7 Eh
    "conv_tol": 1e-10,  # Hartree
    "max_cycle": 100,
    "fallback": {"level_shift": 0.3, "damp": 0.3, "max_cycle": 200},
    "max_stability_restarts": 4,
    "stability_nroots": 1,
    # the inward scan checks every point, the outward scan only its first (minao) point
    "scans": ["in", "out"],
}

# pair: (atom A, atom B, 2S values tried)
PAIRS = {
    "H-H": ("H", "H", [0, 2]),
    "C-H": ("C", "H", [1, 3]),
    "Si-H": ("Si", "H", [1, 3]),
    "C-C": ("C", "C", [0, 2, 4]),
    "Si-Si": ("Si", "Si", [0, 2, 4]),
}
ATOM_SPINS = {"H": [1], "C": [0, 2, 4], "Si": [0, 2, 4]}
COVALENT_RADII = {"H": 0.31, "C": 0.76, "Si": 1.11}  # A, ase.data.covalent_radii


def distances(pair: str) -> list[float]:
    """The grid of a pair (A): 0.05 A steps over 1.6 A from the start, 0.1 A to 3 A, 0.25 A
    to 6 A. The start is 0.4 times the sum of covalent radii (rounded to 0.05 A, at least
    0.4 A): H-H 0.4, C-H 0.45, Si-H 0.55, C-C 0.6, Si-Si 0.9 A."""
    a, b, _ = PAIRS[pair]
    start = max(0.4, round(0.4 * (COVALENT_RADII[a] + COVALENT_RADII[b]) / 0.05) * 0.05)
    grid = [start + 0.05 * i for i in range(33)]
    grid += [0.1 * k for k in range(31) if 0.1 * k > grid[-1] + 1e-6]
    grid += [3.0 + 0.25 * k for k in range(1, 13)]
    return [round(x, 4) for x in grid]


def settings_id(settings: dict = SETTINGS) -> str:
    return f"{settings['xc']}/{settings['basis']}/grids{settings['grids_level']}/tol{settings['conv_tol']:g}"


# ---------------------------------------------------------------- PySCF calculations


def _mol(atoms, spin: int, settings: dict):
    from pyscf import gto

    return gto.M(atom=atoms, basis=settings["basis"], spin=spin, charge=0, unit="Angstrom",
                 symmetry=False, verbose=0)


def _uks(mol, settings: dict):
    from pyscf import dft

    mf = dft.UKS(mol, xc=settings["xc"])
    mf.grids.level = settings["grids_level"]
    mf.conv_tol = settings["conv_tol"]
    mf.max_cycle = settings["max_cycle"]
    mf.verbose = 0
    return mf


def solve(mol, settings: dict = SETTINGS, dm0=None, stability: bool = True) -> dict:
    """Converge UKS for ``mol`` from ``dm0`` (None: minao), with fallbacks and (if
    ``stability``) internal stability restarts. Returns the record (energy_Eh, converged,
    s2, ...) and, under "dm", the density matrices."""
    record = {"fallbacks": [], "stability_restarts": 0, "stable": None}
    mf = _uks(mol, settings)
    mf.kernel(dm0)
    if not mf.converged:
        dm = mf.make_rdm1()
        mf = _uks(mol, settings)
        mf.level_shift = settings["fallback"]["level_shift"]
        mf.damp = settings["fallback"]["damp"]
        mf.max_cycle = settings["fallback"]["max_cycle"]
        mf.kernel(dm)
        record["fallbacks"].append("level_shift+damp")
        if not mf.converged:
            mf = _uks(mol, settings).newton()
            mf.kernel(dm)
            record["fallbacks"].append("newton")
    if mf.converged and stability:
        for _ in range(settings["max_stability_restarts"] + 1):
            mo, _, stable, _ = mf.stability(return_status=True, nroots=settings["stability_nroots"])
            record["stable"] = bool(stable)
            if stable or record["stability_restarts"] == settings["max_stability_restarts"]:
                break
            e_before = mf.e_tot
            dm = mf.make_rdm1(mo, mf.mo_occ)
            trial = _uks(mol, settings).newton()
            trial.kernel(dm)
            record["stability_restarts"] += 1
            if not trial.converged or trial.e_tot > e_before + 1e-9:
                record["stable"] = False
                break
            mf = trial
    record["energy_Eh"] = float(mf.e_tot)
    record["converged"] = bool(mf.converged)
    record["s2"] = float(mf.spin_square()[0])
    record["dm"] = mf.make_rdm1()
    return record


def atom_state(element: str, two_s: int, settings: dict = SETTINGS) -> dict:
    """One spin state of an isolated atom (2S = two_s >= 0)."""
    return solve(_mol([(element, (0.0, 0.0, 0.0))], two_s, settings), settings)


def dimer_point(pair: str, r: float, two_s: int, settings: dict = SETTINGS, dm0=None,
                stability: bool = True) -> dict:
    """One spin state of a dimer at distance r (A), along z."""
    a, b, _ = PAIRS[pair]
    mol = _mol([(a, (0.0, 0.0, 0.0)), (b, (0.0, 0.0, float(r)))], two_s, settings)
    return solve(mol, settings, dm0, stability)


def fragment_guess(atom_dms: dict, a: str, b: str, two_s: int):
    """Block-diagonal UKS density of atoms a and b whose spins 2M_a + 2M_b = two_s, the
    lowest pair of atomic states (a negative 2M is the atomic state with alpha and beta
    swapped). ``atom_dms[el][2S] = (energy, dm)``. Returns (dm, (2M_a, 2M_b))."""
    import numpy as np

    options = []
    for sa, (ea, _) in atom_dms[a].items():
        for ma in {sa, -sa}:
            for sb, (eb, _) in atom_dms[b].items():
                for mb in {sb, -sb}:
                    if ma + mb == two_s:
                        options.append((ea + eb, ma, mb))
    _, ma, mb = min(options)
    blocks = []
    for el, m in ((a, ma), (b, mb)):
        dm = atom_dms[el][abs(m)][1]
        blocks.append(dm if m >= 0 else dm[::-1])
    dm = np.zeros((2,) + tuple(x + y for x, y in zip(blocks[0].shape[1:], blocks[1].shape[1:])))
    na = blocks[0].shape[1]
    for s in range(2):
        dm[s, :na, :na] = blocks[0][s]
        dm[s, na:, na:] = blocks[1][s]
    return dm, (ma, mb)


# ---------------------------------------------------------------- cache


class Cache:
    """Per-SCF records in a JSONL file; the last density of each scan in a folder."""

    def __init__(self, out: Path, settings: dict = SETTINGS):
        stem = out.name.rsplit(".", 1)[0]
        self.path = out.parent / f".{stem}.cache.jsonl"
        self.dm_dir = out.parent / f".{stem}.cache.d"
        self.sid = settings_id(settings)
        self.records: dict[tuple, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if rec.get("settings") == self.sid:
                        self.records[self._key(rec)] = rec

    @staticmethod
    def _key(rec: dict) -> tuple:
        if rec["kind"] == "atom":
            return ("atom", rec["element"], rec["two_s"])
        return ("point", rec["pair"], rec["two_s"], rec["scan"], round(rec["r"], 4))

    def get(self, key):
        return self.records.get(key)

    def put(self, rec: dict, dm=None):
        import numpy as np

        rec = {"settings": self.sid, **rec}
        self.records[self._key(rec)] = rec
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        if dm is not None:
            self.dm_dir.mkdir(exist_ok=True)
            name = "_".join(str(x) for x in self._key(rec)[:-1]) if rec["kind"] == "point" else \
                "_".join(str(x) for x in self._key(rec))
            np.save(self.dm_dir / f"{name}.npy", np.asarray(dm))
            (self.dm_dir / f"{name}.r").write_text(repr(rec.get("r")))

    def last_dm(self, name: str, r):
        import numpy as np

        f = self.dm_dir / f"{name}.npy"
        if f.exists() and (self.dm_dir / f"{name}.r").read_text() == repr(r):
            return np.load(f)
        return None


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def compute_atoms(elements, cache: Cache, settings: dict = SETTINGS) -> dict:
    """atom_dms[el][2S] = (energy_Eh, dm) for every spin in ATOM_SPINS, and the records."""
    out = {}
    for el in elements:
        out[el] = {}
        for two_s in ATOM_SPINS[el]:
            key = ("atom", el, two_s)
            rec = cache.get(key)
            dm = cache.last_dm(f"atom_{el}_{two_s}", None)
            if rec is None or dm is None:
                t0 = time.time()
                res = atom_state(el, two_s, settings)
                dm = res.pop("dm")
                rec = {"kind": "atom", "element": el, "two_s": two_s, "r": None, **res,
                       "seconds": round(time.time() - t0, 2)}
                cache.put(rec, dm)
                _log(f"atom {el} 2S={two_s}: E={rec['energy_Eh']:.8f} conv={rec['converged']} "
                     f"<S2>={rec['s2']:.3f} ({rec['seconds']} s)")
            out[el][two_s] = (rec["energy_Eh"], dm, rec)
    return out


def scan(pair: str, two_s: int, direction: str, atoms: dict, cache: Cache,
         settings: dict = SETTINGS) -> None:
    a, b, _ = PAIRS[pair]
    grid = distances(pair)
    if direction == "in":
        grid = grid[::-1]
    name = f"point_{pair}_{two_s}_{direction}"
    dm_prev, r_prev = None, None
    for r in grid:
        key = ("point", pair, two_s, direction, round(r, 4))
        rec = cache.get(key)
        if rec is not None:
            r_prev, dm_prev = r, None
            continue
        if dm_prev is None and r_prev is not None:
            dm_prev = cache.last_dm(name, r_prev)
        if dm_prev is not None:
            guess, dm0 = "previous", dm_prev
        elif direction == "in":
            dm0, spins = fragment_guess({el: {s: v[:2] for s, v in atoms[el].items()} for el in (a, b)},
                                        a, b, two_s)
            guess = f"atoms 2M={spins[0]},{spins[1]}"
        else:
            guess, dm0 = "minao", None
        t0 = time.time()
        res = dimer_point(pair, r, two_s, settings, dm0, stability=direction == "in" or guess != "previous")
        dm_prev = res.pop("dm")
        r_prev = r
        rec = {"kind": "point", "pair": pair, "two_s": two_s, "scan": direction, "r": r,
               "guess": guess, **res, "seconds": round(time.time() - t0, 2)}
        cache.put(rec, dm_prev)
        _log(f"{pair} 2S={two_s} {direction} r={r:.3f}: E={rec['energy_Eh']:.8f} "
             f"conv={rec['converged']} stable={rec['stable']} restarts={rec['stability_restarts']} "
             f"<S2>={rec['s2']:.3f} {rec['fallbacks'] or ''} ({rec['seconds']} s)")


# ---------------------------------------------------------------- assembly


def assemble(pairs, cache: Cache, atoms: dict, settings: dict = SETTINGS) -> dict:
    import pyscf
    from pyscf.data.nist import HARTREE2EV

    atoms_meta, ground = {}, {}
    for el in sorted({x for p in pairs for x in PAIRS[p][:2]}, key=lambda e: ["H", "C", "Si"].index(e)):
        states = {s: v[2] for s, v in atoms[el].items()}
        conv = {s: rec for s, rec in states.items() if rec["converged"]}
        best = min(conv, key=lambda s: conv[s]["energy_Eh"])
        ground[el] = states[best]["energy_Eh"]
        atoms_meta[el] = {
            "multiplicity": best + 1,
            "energy_eV": states[best]["energy_Eh"] * HARTREE2EV,
            "energy_Eh": states[best]["energy_Eh"],
            "s2": round(states[best]["s2"], 4),
            "other_states_eV_above": {str(s + 1): round((rec["energy_Eh"] - ground[el]) * HARTREE2EV, 4)
                                      for s, rec in states.items() if s != best},
            "all_converged": all(rec["converged"] for rec in states.values()),
        }
    result = {
        "method": {
            "xc": settings["xc"],
            "basis": settings["basis"],
            "code": f"PySCF {pyscf.__version__}",
            "spin": "lowest of " + "; ".join(f"{p}: 2S = {', '.join(map(str, PAIRS[p][2]))}" for p in pairs),
            "reference": "spin-unrestricted Kohn-Sham (pyscf.dft.UKS), all electrons, no symmetry",
            "grids_level": settings["grids_level"],
            "conv_tol_Eh": settings["conv_tol"],
            "max_stability_restarts": settings["max_stability_restarts"],
            "stability": "internal UKS stability analysis (lowest root) at every point of the inward scan "
                         "and the first point of the outward scan; restart with the Newton solver while unstable",
            "scans": "each spin state scanned inward from superposed atoms and outward from minao, "
                     "each distance from the previous density; the lower converged energy kept",
            "hartree_to_eV": HARTREE2EV,
            "atoms": atoms_meta,
            "script": "scripts/dft_dimer_curves.py",
            "compute_seconds": round(sum(rec.get("seconds", 0.0) for rec in cache.records.values()
                                         if rec["kind"] == "atom" or rec["pair"] in pairs)),
        },
    }
    unconverged = []
    for pair in pairs:
        a, b, spins = PAIRS[pair]
        e_atoms = ground[a] + ground[b]
        grid = distances(pair)
        entry = {"distance_A": grid, "binding_energy_eV": [], "multiplicity": [], "s2": [],
                 "converged": [], "by_multiplicity": {}}
        per_spin = {s: {"binding_energy_eV": [], "converged": []} for s in spins}
        scan_gap = {}
        for r in grid:
            candidates = []
            for s in spins:
                recs = [cache.get(("point", pair, s, d, round(r, 4))) for d in settings["scans"]]
                recs = [x for x in recs if x is not None]
                conv = [x for x in recs if x["converged"]]
                if len(conv) == 2:
                    gap = abs(conv[0]["energy_Eh"] - conv[1]["energy_Eh"]) * HARTREE2EV
                    scan_gap[s] = max(scan_gap.get(s, 0.0), gap)
                pick = min(conv or recs, key=lambda x: x["energy_Eh"]) if recs else None
                per_spin[s]["binding_energy_eV"].append(
                    None if pick is None else round((pick["energy_Eh"] - e_atoms) * HARTREE2EV, 7))
                per_spin[s]["converged"].append(bool(conv))
                if pick is not None:
                    candidates.append((not pick["converged"], pick["energy_Eh"], s, pick))
            if not candidates:
                raise RuntimeError(f"{pair} r={r}: nothing computed")
            _, energy, s, pick = min(candidates)
            entry["binding_energy_eV"].append(round((energy - e_atoms) * HARTREE2EV, 7))
            entry["multiplicity"].append(s + 1)
            entry["s2"].append(round(pick["s2"], 3))
            entry["converged"].append(pick["converged"])
            if not pick["converged"]:
                unconverged.append(f"{pair} r={r}")
        entry["by_multiplicity"] = {str(s + 1): v for s, v in per_spin.items()}
        entry["max_scan_disagreement_eV"] = {str(s + 1): round(v, 6) for s, v in scan_gap.items()}
        result[pair] = entry
    result["unconverged_chosen_points"] = unconverged
    return result


NOTES = (
    "Binding energy E(AB) - E(A) - E(B) in eV; atoms in their lowest UKS spin state with the same "
    "functional, basis and grids. At each distance the lowest-energy spin state (multiplicity 2S+1) among "
    "those tried is kept; by_multiplicity holds every tried state (binding energy, null if not computed). "
    "Caveat: these are single-reference UKS curves; at stretched bonds the low-spin states are "
    "broken-symmetry solutions (e.g. singlet H2 beyond the Coulson-Fischer point, C2 and Si2 at long range) "
    "with spin contamination, see s2 (<S^2> of the chosen state, exact values 0, 0.75, 2, 3.75, 6). "
    "Where a broken-symmetry low-spin state and the high-spin state both dissociate to the atoms, the "
    "chosen multiplicity at long range is decided by differences of ~1e-4 eV (grid noise). "
    "C2 has strong multireference character: the lowest UKS-PBE state near the minimum is a triplet "
    "(3Pi_u-like, r_e ~1.31 A), below the singlet (X 1Sigma_g+ in experiment, r_e 1.243 A), a known "
    "failure of single-reference DFT; the curve is what a PBE-trained model could learn at best, not the "
    "physical one. Atomic UKS densities are not spherically averaged (integer occupations of real p "
    "orbitals). Si2: two triplet states cross near 2.15-2.2 A (3Pi_u-like inside, 3Sigma_g- at the "
    "minimum, as in experiment), hence a kink there; the quintet keeps a slow tail (-0.02 eV at 6 A, "
    "-0.001 eV at 8 A, -0.0003 eV at 10 A), a real UKS-PBE interaction, not an atomic-reference mismatch. "
    "In the cache, stable=False marks points where the stability analysis found a negative Hessian "
    "eigenvalue but the rotated restart did not lower the energy (only C-H doublet at r <= 0.6 A)."
)


def probe(settings: dict = SETTINGS) -> None:
    """Time one point of each spin state of C2 (1.25 A) and Si2 (2.25 A), and the atoms."""
    for el in ("C", "Si"):
        for two_s in ATOM_SPINS[el]:
            t0 = time.time()
            res = atom_state(el, two_s, settings)
            _log(f"{settings['basis']} atom {el} 2S={two_s}: E={res['energy_Eh']:.8f} conv={res['converged']} "
                 f"<S2>={res['s2']:.3f} restarts={res['stability_restarts']} {time.time() - t0:.1f} s")
    for pair, r in (("C-C", 1.25), ("Si-Si", 2.25)):
        for two_s in PAIRS[pair][2]:
            t0 = time.time()
            res = dimer_point(pair, r, two_s, settings)
            _log(f"{settings['basis']} {pair} r={r} 2S={two_s}: E={res['energy_Eh']:.8f} conv={res['converged']} "
                 f"stable={res['stable']} restarts={res['stability_restarts']} <S2>={res['s2']:.3f} "
                 f"{res['fallbacks']} {time.time() - t0:.1f} s")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--basis", default=SETTINGS["basis"])
    parser.add_argument("--probe", action="store_true", help="time one point per spin state of C2 and Si2")
    args = parser.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from pyscf import lib

    lib.num_threads(args.threads)
    settings = dict(SETTINGS, basis=args.basis)
    if args.probe:
        probe(settings)
        return
    out = args.out.resolve()
    cache = Cache(out, settings)
    t0 = time.time()
    elements = sorted({x for p in args.pairs for x in PAIRS[p][:2]})
    atoms = compute_atoms(elements, cache, settings)
    for pair in args.pairs:
        for two_s in PAIRS[pair][2]:
            for direction in settings["scans"]:
                scan(pair, two_s, direction, atoms, cache, settings)
    result = assemble(args.pairs, cache, atoms, settings)
    result["notes"] = NOTES
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    _log(f"wrote {out} ({out.stat().st_size} bytes) in {time.time() - t0:.0f} s; "
         f"unconverged chosen points: {result['unconverged_chosen_points']}")


if __name__ == "__main__":
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"
    sys.exit(main())
