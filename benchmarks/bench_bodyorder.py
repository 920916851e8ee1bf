"""Speed of BodyOrderCalculator against the alternatives, measured in one run.

For hydrogen clusters of 16..128 atoms at two densities and K = 2, 3, energy+forces:

- ours: BodyOrderCalculator (packed), with its time breakdown;
- (a) metatomic's MetatomicCalculator called once per subcluster;
- (b) MetatomicCalculator.compute_energy(list_of_subclusters, compute_forces_and_stresses=True);
- (c) the floor: one packed model call, forward and backward, over the same subclusters
  (system and neighbour lists built outside the timer).

(a) and (b) are timed on at most --sample subclusters and scaled to the full count
(marked '~'): their cost is linear in the count. The last column, (b)/(c), is the most
any engine that evaluates these subclusters with this model can gain over (b): where
the model's own arithmetic dominates, it is small whatever the engine does. Also times the enumeration and
coefficients at 1000 atoms, K = 3, against the model time they precede.

Usage: python benchmarks/bench_bodyorder.py [--model PATH] [--sizes 16 32 64 128]
"""

from __future__ import annotations

import argparse
import time
import warnings

import ase
import numpy as np
import torch

warnings.filterwarnings("ignore")


def cluster(n: int, density: float, seed: int) -> ase.Atoms:
    rng = np.random.default_rng(seed)
    radius = (3 * n / (4 * np.pi * density)) ** (1 / 3)
    points = []
    while len(points) < n:
        p = rng.uniform(-radius, radius, 3)
        if p @ p <= radius**2 and all(np.linalg.norm(p - q) >= 0.7 for q in points):
            points.append(p)
    return ase.Atoms("H%d" % n, positions=np.array(points))


def best_of(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from metatomic_ase import MetatomicCalculator

    from ase_bodyorder import BodyOrderCalculator
    from ase_bodyorder.backends.base import ClusterBatch
    from ase_bodyorder.expansion import build_body_graph, plan_expansion
    from ase_bodyorder.backends.metatomic import load_model
    from ase_bodyorder.models import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--densities", type=float, nargs="+", default=[0.03, 0.12])
    parser.add_argument("--orders", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--sample", type=int, default=400, help="subclusters timed for (a) and (b)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_model(args.model)
    reference = MetatomicCalculator(load_model(model))
    print(f"model {model}, torch threads {torch.get_num_threads()}")
    header = (
        f"{'N':>4} {'rho':>5} {'K':>2} {'subclusters':>11} {'ours ms':>9} {'enum':>6} {'pack':>6} {'model':>7} "
        f"{'assem':>6} {'floor ms':>9} {'(a) ms':>10} {'(b) ms':>10} {'b/ours':>7} {'ours/floor':>10} {'a/ours':>7} "
        f"{'b/floor':>7}"
    )
    print(header)
    for density in args.densities:
        for n in args.sizes:
            atoms = cluster(n, density, n)
            for order in args.orders:
                calc = BodyOrderCalculator(str(model), order)
                atoms.calc = calc

                def ours():
                    atoms.positions[0, 0] += 1e-9  # a new configuration each call
                    atoms.get_forces()

                ours()  # warm up: TorchScript specialises on the first calls
                ours()
                t_ours = best_of(ours, args.repeats)
                timings = dict(calc.timings)
                counts = calc.results["subcluster_counts"]

                # the same subclusters (sizes 2..K), as separate Atoms
                plan, layout = calc._plan(atoms)
                positions = atoms.positions[layout.parent]
                batch = ClusterBatch(positions, atoms.numbers[layout.parent], layout.ptr)
                subclusters = [
                    ase.Atoms(numbers=batch.numbers[a:b], positions=batch.positions[a:b])
                    for a, b in zip(batch.ptr[:-1], batch.ptr[1:])
                ]
                total = len(subclusters)
                sample = subclusters[: args.sample]
                scale = total / max(1, len(sample))

                backend = calc.backend

                def floor():
                    chunk_times = 0.0
                    for _, chunk in batch.chunks(calc.max_atoms_per_chunk):
                        p = torch.from_numpy(chunk.positions).to(backend.device, backend._torch_dtype)
                        p.requires_grad_(True)
                        system = backend._system(p, chunk.numbers, chunk.ptr)
                        start = time.perf_counter()
                        backend.run_packed(system, chunk, p, True)
                        chunk_times += time.perf_counter() - start
                    return chunk_times

                floor()
                t_floor = min(floor() for _ in range(args.repeats))

                def list_call():
                    reference.compute_energy(sample, compute_forces_and_stresses=True)

                list_call()
                t_b = best_of(list_call, 1) * scale

                one_by_one = sample[: max(1, args.sample // 4)]

                def single_calls():
                    for s in one_by_one:
                        s.calc = reference
                        s.get_forces()

                single_calls()
                t_a = best_of(single_calls, 1) * total / len(one_by_one)
                mark = "~" if scale > 1 else " "
                print(
                    f"{n:>4} {density:>5} {order:>2} {'/'.join(map(str, counts)):>11} {1e3 * t_ours:>9.1f} "
                    f"{1e3 * timings['enumerate']:>6.1f} {1e3 * timings['pack']:>6.1f} {1e3 * timings['model']:>7.1f} "
                    f"{1e3 * timings['assemble']:>6.1f} {1e3 * t_floor:>9.1f} ~{1e3 * t_a:>9.0f} {mark}{1e3 * t_b:>9.0f} "
                    f"{t_b / t_ours:>7.1f} {t_ours / t_floor:>10.2f} {t_a / t_ours:>7.0f} {t_b / t_floor:>7.1f}",
                    flush=True,
                )

    # enumeration and coefficients at scale
    atoms = cluster(1000, 0.12, 0)
    start = time.perf_counter()
    graph = build_body_graph(atoms.positions, np.zeros((3, 3)), [False] * 3, calc.cutoff)
    plan = plan_expansion(graph, 3)
    plan.coefficients()
    t_plan = time.perf_counter() - start
    per_subcluster = t_floor / max(1, batch.n_clusters)
    model_estimate = per_subcluster * (plan.counts[1] + plan.counts[2])
    print(
        f"1000 atoms, rho 0.12, K=3: {plan.counts.tolist()} subsets; enumeration+coefficients "
        f"{t_plan:.2f} s vs model ~{model_estimate:.1f} s ({100 * t_plan / model_estimate:.1f}%)"
    )


if __name__ == "__main__":
    main()
