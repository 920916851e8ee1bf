"""Per-step cost through i-PI against the ASE MD path, and the gain from batching beads.

Same system (examples/h16.xyz), same model and K:

- ASE: velocity Verlet with BodyOrderCalculator, per step;
- i-PI, 1 bead, socket + `ase-bodyorder ipi driver`, per step;
- i-PI PIMD, 8 beads, unbatched vs <batch_size>8</batch_size>, per step and per bead;
- i-PI PIMD, 8 beads in batches of 4 (the shipped pimd_socket.xml), served by 1 and by
  2 drivers, each with torch's default threads and with one thread per driver: several
  drivers only pay when their threads do not oversubscribe the cores.

Every ASE-side process sets its torch threads explicitly (--threads).

A real i-PI server is started as a subprocess on a UNIX socket; every process is ended.

Usage: python benchmarks/bench_ipi.py [--model default] [-K 2] [--steps 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase.io

ROOT = Path(__file__).resolve().parent.parent
INPUT = """<simulation verbosity='low' safe_stride='100000'>
  <output prefix='sim'><properties stride='1' filename='out'> [ step, potential{{electronvolt}} ] </properties></output>
  <total_steps>{steps}</total_steps>
  <prng><seed>1</seed></prng>
  <ffsocket name='bo' mode='unix' pbc='false'><address>{address}</address>{batch}<timeout>600</timeout></ffsocket>
  <system>
    <initialize nbeads='{beads}'><file mode='ase'> init.xyz </file><velocities mode='thermal' units='kelvin'> 100 </velocities></initialize>
    <forces><force forcefield='bo'/></forces>
    <motion mode='dynamics'><dynamics mode='nvt'><timestep units='femtosecond'> 0.5 </timestep>
      <thermostat mode='pile_l'><tau units='femtosecond'>100</tau></thermostat></dynamics></motion>
    <ensemble><temperature units='kelvin'>100</temperature></ensemble>
  </system>
</simulation>
"""


def ipi_per_step(
    folder: Path, model: str, order: int, steps: int, beads: int, batch: int, drivers: int = 1, threads: int = 2
) -> float:
    address = f"bench_{os.getpid()}_{beads}_{batch}_{drivers}_{threads}"
    (folder / "input.xml").write_text(
        INPUT.format(steps=steps, beads=beads, address=address,
                     batch=f"<batch_size>{batch}</batch_size>" if batch > 1 else "")
    )
    for f in folder.glob("sim.*"):
        f.unlink()
    server = subprocess.Popen(["i-pi", "input.xml"], cwd=folder, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    clients = []
    try:
        deadline = time.time() + 60
        while not os.path.exists(f"/tmp/ipi_{address}"):
            if time.time() > deadline or server.poll() is not None:
                raise RuntimeError("i-PI did not start")
            time.sleep(0.05)
        clients = [
            subprocess.Popen(
                [sys.executable, "-m", "ase_bodyorder.cli", "ipi", "driver", "-a", address, "--template",
                 "init.xyz", "--model", model, "-K", str(order), "--threads", str(threads)],
                cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
            for _ in range(drivers)
        ]
        # time from the 5th logged step to the last (excludes start-up and warm-up)
        marks = {}
        while server.poll() is None:
            out = folder / "sim.out"
            if out.exists():
                lines = [l for l in out.read_text().splitlines() if l and not l.startswith("#")]
                if len(lines) >= 5 and "start" not in marks:
                    marks["start"] = (time.perf_counter(), len(lines))
            time.sleep(0.01)
        end = time.perf_counter()
        n = len([l for l in (folder / "sim.out").read_text().splitlines() if l and not l.startswith("#")])
        t0, n0 = marks["start"]
        return (end - t0) / max(1, n - n0)
    finally:
        for process in (server, *clients):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ase_per_step(model: str, order: int, steps: int, threads: int) -> float:
    import torch
    from ase import units
    from ase.md.verlet import VelocityVerlet

    from ase_bodyorder import BodyOrderCalculator

    torch.set_num_threads(threads)
    atoms = ase.io.read(ROOT / "examples/h16.xyz")
    atoms.calc = BodyOrderCalculator(model, order)
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    dyn.run(5)
    start = time.perf_counter()
    dyn.run(steps)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("-K", "--order", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads of a lone process")
    args = parser.parse_args()
    from ase_bodyorder.models import resolve_model

    model = str(resolve_model(args.model))
    folder = Path(tempfile.mkdtemp())
    atoms = ase.io.read(ROOT / "examples/ipi/h16.xyz")
    ase.io.write(folder / "init.xyz", atoms)
    try:
        n = args.steps + 5
        t_ase = ase_per_step(model, args.order, args.steps, args.threads)
        t_ipi = ipi_per_step(folder, model, args.order, n, 1, 1, threads=args.threads)
        t_pimd = ipi_per_step(folder, model, args.order, n, 8, 1, threads=args.threads)
        t_pimd_batched = ipi_per_step(folder, model, args.order, n, 8, 8, threads=args.threads)
        # drivers x threads each: all cores to one driver, or shared
        shared = {
            (drivers, threads): ipi_per_step(folder, model, args.order, n, 8, 4, drivers, threads)
            for drivers, threads in [(1, args.threads), (2, args.threads), (1, 1), (2, 1)]
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"H16, K={args.order}, model {model}")
    print(f"ASE MD:                      {1e3 * t_ase:8.2f} ms/step")
    print(f"i-PI, 1 bead (socket):       {1e3 * t_ipi:8.2f} ms/step  ({t_ipi / t_ase:.2f}x ASE)")
    print(f"i-PI PIMD 8 beads, unbatched:{1e3 * t_pimd:8.2f} ms/step  {1e3 * t_pimd / 8:.2f} ms/bead")
    print(f"i-PI PIMD 8 beads, batched:  {1e3 * t_pimd_batched:8.2f} ms/step  {1e3 * t_pimd_batched / 8:.2f} ms/bead"
          f"  (batching gain {t_pimd / t_pimd_batched:.2f}x)")
    print(f"\ni-PI PIMD 8 beads in batches of 4 (pimd_socket.xml), ms/step:")
    print(f"{'':<26}{'1 driver':>10}{'2 drivers':>11}{'2 vs 1':>9}")
    for threads in (args.threads, 1):
        one, two = shared[(1, threads)], shared[(2, threads)]
        label = f"{threads} torch thread(s) each"
        print(f"{label:<26}{1e3 * one:10.1f}{1e3 * two:11.1f}{one / two:8.2f}x")
    best_one = min(shared[(1, args.threads)], shared[(1, 1)])
    print(f"2 drivers x 1 thread against the best single driver: {best_one / shared[(2, 1)]:.2f}x faster")


if __name__ == "__main__":
    main()
