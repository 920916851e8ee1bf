"""CHGNet body-order expansion: packed evaluation (one crystal graph per chunk) against
CHGNet's own ASE calculator called once per subcluster, and against CHGNet's own
batched path (a list of graphs, as ``predict_structure(list, batch_size=...)`` runs).

Every case runs in its own process (so that its peak memory is its own), with torch's
threads set explicitly; ratios are measured in the same run. The structure is the
8-atom cubic cell of silicon (rattled), periodic, at K = 3 with CHGNet's 6 A cutoff:
8 atoms, 183 pairs and 5,786 triplets per cell. Times are energy and forces.

- one at a time: ``CHGNetCalculator`` on each subcluster, the cluster in a box with
  13 A of vacuum (CHGNet's calculator needs a cell), through the ASE-calculator path;
- list of graphs: CHGNet's converter on each boxed subcluster, then CHGNet's forward on
  lists of 256 graphs (task "ef"), given to the expansion as a batched function
  (``BatchedCallableBackend``): CHGNet's own batched API without a backend of ours;
- packed, float32 and float64: ``ChgnetBackend``, every subcluster of a chunk in one graph.

Usage: python benchmarks/bench_chgnet.py [--threads 1] [--repeat 1]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import subprocess
import sys
import time
import warnings

VACUUM = 13.0  # A between periodic images of a boxed cluster: more than CHGNet's 6 A
LIST_BATCH = 256


def structure(repeat: int = 1):
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(repeat)
    atoms.rattle(0.03, seed=7)
    return atoms


def boxed(cluster):
    """An isolated cluster in a periodic box, as CHGNet's calculator needs it."""
    import numpy as np

    box = cluster.copy()
    box.positions -= box.positions.min(axis=0) - VACUUM / 2
    box.cell = np.diag(np.ptp(cluster.positions, axis=0) + VACUUM)
    box.pbc = True
    return box


def boxed_calculator(model):
    """CHGNet's own ASE calculator on each (boxed) subcluster."""
    from ase.calculators.calculator import Calculator, all_changes
    from chgnet.model.dynamics import CHGNetCalculator

    own = CHGNetCalculator(model, use_device="cpu", on_isolated_atoms="ignore")

    class Boxed(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            box = boxed(self.atoms)
            box.calc = own
            self.results = {"energy": float(box.get_potential_energy()), "forces": box.get_forces()}

    return Boxed()


def list_of_graphs(model):
    """CHGNet's own batched path as a batched function: a list of boxed clusters,
    converted one by one, evaluated in lists of LIST_BATCH graphs."""
    import numpy as np
    from pymatgen.io.ase import AseAtomsAdaptor

    model.graph_converter.set_isolated_atom_response("ignore")  # lone atoms are valid clusters

    def function(clusters):
        graphs = [model.graph_converter(AseAtomsAdaptor.get_structure(boxed(c))) for c in clusters]
        energies, forces = [], []
        for first in range(0, len(graphs), LIST_BATCH):
            out = model(graphs[first:first + LIST_BATCH], task="ef")
            sizes = [len(c) for c in clusters[first:first + LIST_BATCH]]
            energies.extend((out["e"].detach().double().numpy() * sizes).tolist())  # per atom -> total
            forces.extend(f.detach().double().numpy() for f in out["f"])
        return np.array(energies), forces

    return function


def run_case(case: dict) -> dict:
    """One measurement, in this process: wall time and peak memory."""
    import numpy as np
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(case["threads"])
    from ase_bodyorder import BatchedCallableBackend, BodyOrderCalculator
    from ase_bodyorder.backends.chgnet import ChgnetBackend

    with contextlib.redirect_stdout(io.StringIO()):  # CHGNet prints as it loads
        from chgnet.model import CHGNet

        model = CHGNet.load(use_device="cpu", verbose=False)
    settings = {"max_subclusters": None}
    if case["kind"] == "one_at_a_time":
        calc = BodyOrderCalculator(boxed_calculator(model), case["order"], cutoff=6.0, check_locality=False, **settings)
    elif case["kind"] == "list_of_graphs":
        backend = BatchedCallableBackend(list_of_graphs(model), 6.0, name="CHGNet list of graphs", dtype="float32")
        calc = BodyOrderCalculator(backend, case["order"], **settings)
    else:
        calc = BodyOrderCalculator(ChgnetBackend(model, dtype=case["dtype"]), case["order"], **settings)
    atoms = structure(case["repeat"])
    warm = atoms.copy()  # warm-up (and the locality probe) on a smaller expansion
    warm.calc = calc
    with contextlib.redirect_stdout(io.StringIO()):
        calc.set(max_order=1)
        warm.get_forces()
        calc.set(max_order=case["order"])
    atoms.calc = calc
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        energy = atoms.get_potential_energy()
        forces = atoms.get_forces()
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "energy_per_atom": energy / len(atoms),
        "forces": forces.tolist(),
        "counts": calc.results["subcluster_counts"].tolist(),
        "truncated_per_atom": (calc.results["truncated_energies"] / len(atoms)).tolist(),
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_seconds": calc.timings.get("model", float("nan")),
        "max_force": float(np.abs(forces).max()),
    }


def measure(case: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--case", json.dumps(case)], capture_output=True,
                            text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"case {case} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads of every process (default 1)")
    parser.add_argument("--repeat", type=int, default=1, help="cubic cells along each axis (default 1: 8 atoms)")
    parser.add_argument("--order", type=int, default=3, help="body order K (default 3)")
    parser.add_argument("--skip-one-at-a-time", action="store_true", help="leave out the slowest case")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(json.loads(args.case))))
        return

    base = {"threads": args.threads, "order": args.order, "repeat": args.repeat}
    cases = {
        "packed, float32": {**base, "kind": "packed", "dtype": "float32"},
        "packed, float64": {**base, "kind": "packed", "dtype": "float64"},
        "CHGNet's list of graphs (float32)": {**base, "kind": "list_of_graphs"},
    }
    if not args.skip_one_at_a_time:
        cases["CHGNetCalculator, one at a time"] = {**base, "kind": "one_at_a_time"}
    results = {name: measure(case) for name, case in cases.items()}
    first = next(iter(results.values()))
    slowest = max(r["seconds"] for r in results.values())
    print(f"CHGNet 0.3.0, Si{8 * args.repeat ** 3} (periodic, rattled), K = {args.order}, subclusters "
          f"{first['counts']}, energy + forces, {args.threads} torch thread(s) per process\n")
    print(f"{'case':<36}{'time (s)':>10}{'speed-up':>10}{'peak MB':>9}   E^(K) (eV/atom)   max |dF| (eV/A)")
    reference = np.array(first["forces"])
    for name, r in results.items():
        df = np.abs(np.array(r["forces"]) - reference).max()
        print(f"{name:<36}{r['seconds']:10.2f}{slowest / r['seconds']:9.1f}x{r['peak_rss_MB']:9.0f}"
              f"   {r['energy_per_atom']:.6f}        {df:.1e}")
    print("\n(speed-up: against the slowest case; max |dF|: against packed float32)")


if __name__ == "__main__":
    main()
