"""The ``ase-bodyorder`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


class CommandError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def _add_model_options(parser: argparse.ArgumentParser, order_required: bool = True) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="metatomic .pt model, or a shipped model's name (default: the shipped default model)",
    )
    parser.add_argument("--max-order", "-K", type=int, required=order_required, help="body order K >= 1")
    parser.add_argument("--cutoff", type=float, default=None, help="locality radius in A (default: the model's)")
    parser.add_argument(
        "--fragments",
        default=None,
        help="bodies: 'molecules' (covalently bonded groups of the structure) or a JSON list of atom-index lists",
    )
    parser.add_argument("--device", default=None, help="torch device (default: the model's preferred)")


def _calculator(args, atoms=None):
    from .calculator import MODEL_CUTOFF, BodyOrderCalculator
    from .expansion import molecules

    fragments = None
    if args.fragments == "molecules":
        if atoms is None:
            raise CommandError("--fragments molecules needs one structure to find the molecules in")
        fragments = molecules(atoms)
    elif args.fragments:
        try:
            fragments = json.loads(args.fragments)
        except ValueError as error:
            raise CommandError(f"--fragments is not valid JSON: {error}") from None
    return BodyOrderCalculator(
        args.model,
        args.max_order,
        cutoff=MODEL_CUTOFF if args.cutoff is None else args.cutoff,
        fragments=fragments,
        device=args.device,
    )


def _read_structure(path: str, index=-1):
    import ase.io

    if not Path(path).exists():
        raise CommandError(f"structure file '{path}' does not exist")
    try:
        return ase.io.read(path, index=index)
    except Exception as error:
        raise CommandError(f"could not read a structure from '{path}': {error}") from None


# ----------------------------------------------------------------------------------


def _cmd_md(args) -> int:
    from .h5md import read_log
    from .md import run_md

    if args.steps < 1:
        raise CommandError(f"--steps must be a positive number of steps, got {args.steps}")
    if args.timestep <= 0:
        raise CommandError(f"--timestep must be positive (fs), got {args.timestep}")
    if args.ensemble != "nve" and args.temperature is None:
        raise CommandError(f"--ensemble {args.ensemble} needs --temperature")
    if args.overwrite and args.append:
        raise CommandError("--overwrite and --append exclude each other")
    log = Path(args.log)
    if log.exists() and not (args.overwrite or args.append):
        raise CommandError(f"log '{log}' exists: pass --overwrite to replace it or --append to continue it")
    if not log.parent.exists():
        raise CommandError(f"folder '{log.parent}' for the log does not exist")
    if log.exists() and args.overwrite and not _writable(log):
        raise CommandError(f"log '{log}' is not writable")
    if not log.exists() and not _writable(log.parent):
        raise CommandError(f"cannot write the log in '{log.parent}'")

    atoms = _read_structure(args.structure)
    step_offset, initialise = 0, True
    if args.append and log.exists():
        previous = read_log(log)
        if len(previous.step) == 0:
            raise CommandError(f"log '{log}' holds no frame to continue from")
        if len(previous.numbers) != len(atoms) or (previous.numbers != atoms.numbers).any():
            raise CommandError(
                f"cannot append: log '{log}' holds {len(previous.numbers)} atoms, "
                f"'{args.structure}' has {len(atoms)} (or other species)"
            )
        # continue the trajectory from the log's last frame
        last = previous.frames()[-1]
        atoms.positions = last.positions
        atoms.set_velocities(last.get_velocities())
        if previous.cells is not None:
            atoms.cell = previous.cells[-1]
        step_offset, initialise = int(previous.step[-1]), False

    calculator = _calculator(args, atoms)
    mode = "append" if args.append else ("overwrite" if args.overwrite else "create")
    try:
        result = run_md(
            atoms,
            calculator,
            steps=args.steps,
            timestep_fs=args.timestep,
            ensemble=args.ensemble,
            temperature_K=args.temperature,
            friction_per_fs=args.friction,
            seed=args.seed,
            log=log,
            log_every=args.log_every,
            flush_every=args.flush_every,
            log_mode=mode,
            step_offset=step_offset,
            per_atom=args.per_atom,
            full_model_every=args.full_model_every,
            initialise_velocities=initialise,
            progress=not args.quiet,
        )
    except KeyboardInterrupt:  # a second Ctrl-C: the log was closed on the way out
        result = None
    if result is None or result.interrupted:
        data = read_log(log)
        last = int(data.step[-1]) if len(data.step) else None
        print(f"interrupted: log '{log}' closed, it holds {len(data.step)} frames up to step {last}", file=sys.stderr)
        return 130
    print(f"ran {result.steps_done} steps (last step {result.last_step}); log written to '{log}'")
    return 0


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK)


def _cmd_decompose(args) -> int:
    from tqdm.auto import tqdm

    from .decompose import decompose

    structures = []
    for path in args.structures:
        frames = _read_structure(path, index=":")
        for f, atoms in enumerate(frames):
            structures.append((f"{path}" if len(frames) == 1 else f"{path}@{f}", atoms))
    calculator = _calculator(args, structures[0][1] if len(structures) == 1 else None)
    rows = []
    for name, atoms in tqdm(structures, unit="structure", disable=args.quiet or len(structures) < 2, file=sys.stderr):
        result = decompose(atoms, None, args.max_order, full_model=args.full_model, calculator=calculator)
        rows.append((name, len(atoms), result))
    _print_decompositions(rows, args.format, args.max_order)
    return 0


def _print_decompositions(rows, fmt: str, order: int) -> None:
    if fmt == "json":
        print(json.dumps([{"structure": n, "n_atoms": a, **r.as_dict(), "per_atom": None} for n, a, r in rows], indent=1))
        return
    header = ["structure", "n_atoms"] + [f"dE_{k}" for k in range(1, order + 1)] + [f"E^({order})"]
    header += [f"n_{k}" for k in range(1, order + 1)]
    has_full = rows and rows[0][2].full_energy is not None
    if has_full:
        header += ["E_model", "remainder"]
    table = []
    for name, n_atoms, r in rows:
        line = [name, str(n_atoms)] + [f"{e:.6f}" for e in r.body_order_energies]
        line += [f"{r.truncated_energies[-1]:.6f}"] + [str(c) for c in r.counts]
        if has_full:
            line += [f"{r.full_energy:.6f}", f"{r.remainder:.6f}"]
        table.append(line)
    if fmt == "csv":
        print(",".join(header))
        for line in table:
            print(",".join(line))
        return
    widths = [max(len(h), *(len(line[i]) for line in table)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for line in table:
        print("  ".join(v.rjust(w) for v, w in zip(line, widths)))


def _cmd_info(args) -> int:
    from .report import summarise

    print(summarise(args.log))
    return 0


def _cmd_report(args) -> int:
    from .report import plot_log

    output = Path(args.output) if args.output else Path(args.log).with_suffix(".png")
    if output.exists() and not args.overwrite:
        raise CommandError(f"'{output}' exists: pass --overwrite to replace it")
    plot_log(args.log, output)
    print(f"report written to '{output}'")
    return 0


def _cmd_curves(args) -> int:
    import numpy as np

    from .analysis import dimer_curve, plot_curves, trimer_curve

    distances = np.linspace(args.min, args.max, args.points)
    curves = []
    if args.kind in ("dimer", "both"):
        curves.append(dimer_curve(args.model, args.species[:2] if len(args.species) >= 2 else args.species * 2, distances, device=args.device))
    if args.kind in ("trimer", "both"):
        species = (args.species * 3)[:3] if len(args.species) < 3 else args.species[:3]
        curves.append(trimer_curve(args.model, species, distances, device=args.device))
    print("distance_A," + ",".join(f"{c.kind}_eV" for c in curves))
    for i, d in enumerate(distances):
        print(f"{d:.4f}," + ",".join(f"{c.energy[i]:.8f}" for c in curves))
    if args.output:
        if Path(args.output).exists() and not args.overwrite:
            raise CommandError(f"'{args.output}' exists: pass --overwrite to replace it")
        plot_curves(curves, args.output)
        print(f"plot written to '{args.output}'", file=sys.stderr)
    return 0


def _cmd_models(args) -> int:
    from .models import DEFAULT_MODEL, list_models, model_card, resolve_model

    for name in list_models():
        card = model_card(name)
        mark = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{mark}: {card.get('summary', '')}")
        print(f"    {resolve_model(name)}")
    return 0


# ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ase-bodyorder",
        description="Many-body expansions of machine-learning interatomic potentials.",
    )
    parser.add_argument("--version", action="version", version=f"ase-bodyorder {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    md = sub.add_parser("md", help="run MD with a body-order-truncated model and log every step (H5MD)")
    md.add_argument("structure", help="any structure file ASE can read (last frame used)")
    _add_model_options(md)
    md.add_argument("--steps", type=int, required=True, help="number of MD steps")
    md.add_argument("--timestep", type=float, default=0.5, help="timestep in fs (default 0.5)")
    md.add_argument("--ensemble", choices=["nve", "langevin", "bussi"], default="nve")
    md.add_argument("--temperature", type=float, default=None, help="K; also sets initial velocities")
    md.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)")
    md.add_argument("--log", default="bodyorder.h5", help="H5MD log file (default bodyorder.h5)")
    md.add_argument("--log-every", type=int, default=1, help="log every n steps (default 1)")
    md.add_argument("--flush-every", type=int, default=10, help="write to disk every n logged frames")
    md.add_argument("--per-atom", action="store_true", help="also log per-atom body-order energies")
    md.add_argument("--full-model-every", type=int, default=0, help="log the plain model's energy every m steps")
    md.add_argument("--seed", type=int, default=None)
    md.add_argument("--overwrite", action="store_true", help="replace an existing log")
    md.add_argument("--append", action="store_true", help="continue an existing log from its last frame")
    md.add_argument("--quiet", action="store_true", help="no progress bar")
    md.set_defaults(run=_cmd_md)

    dec = sub.add_parser("decompose", help="per-structure body-order contributions")
    dec.add_argument("structures", nargs="+", help="structure files (every frame is decomposed)")
    _add_model_options(dec)
    dec.add_argument("--format", choices=["table", "csv", "json"], default="table")
    dec.add_argument("--full-model", action="store_true", help="also evaluate the plain model and the remainder")
    dec.add_argument("--quiet", action="store_true")
    dec.set_defaults(run=_cmd_decompose)

    info = sub.add_parser("info", help="text summary of a log")
    info.add_argument("log")
    info.set_defaults(run=_cmd_info)

    report = sub.add_parser("report", help="plots of a log (PNG or PDF)")
    report.add_argument("log")
    report.add_argument("-o", "--output", default=None, help="FILE.png or FILE.pdf (default: next to the log)")
    report.add_argument("--overwrite", action="store_true")
    report.set_defaults(run=_cmd_report)

    curves = sub.add_parser("curves", help="dimer and trimer body-order curves of a model (CSV, plot)")
    curves.add_argument("--model", default="default")
    curves.add_argument("--species", nargs="+", default=["H"], help="element symbols (default H)")
    curves.add_argument("--kind", choices=["dimer", "trimer", "both"], default="both")
    curves.add_argument("--min", type=float, default=0.5, help="shortest distance (A)")
    curves.add_argument("--max", type=float, default=5.0, help="longest distance (A)")
    curves.add_argument("--points", type=int, default=91)
    curves.add_argument("--device", default=None)
    curves.add_argument("-o", "--output", default=None, help="plot to FILE.png or FILE.pdf")
    curves.add_argument("--overwrite", action="store_true")
    curves.set_defaults(run=_cmd_curves)

    models = sub.add_parser("models", help="list the shipped models")
    models.set_defaults(run=_cmd_models)

    from .ipi import add_ipi_commands

    add_ipi_commands(sub, CommandError)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except CommandError as error:
        print(f"ase-bodyorder {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, PermissionError, OSError) as error:
        print(f"ase-bodyorder {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
