"""``ase-bodyorder md``: MD with a body-order-truncated model and its H5MD log."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import (
    CommandError,
    add_dask_options,
    add_model_options,
    check_model,
    dask_client,
    make_calculator,
    read_structure,
    warnings_to_stderr,
    writable,
)


def register(subparsers) -> None:
    """Add the ``md`` command."""
    md = subparsers.add_parser("md", help="run MD with a body-order-truncated model and log every step (H5MD)")
    md.add_argument("structure", help="any structure file ASE can read (last frame used)")
    add_model_options(md)
    md.add_argument("--steps", type=int, required=True, help="number of MD steps")
    md.add_argument("--timestep", type=float, default=0.5, help="timestep in fs (default %(default)s)")
    md.add_argument(
        "--ensemble", choices=["nve", "langevin", "bussi"], default="nve",
        help="nve: velocity Verlet; langevin: Langevin thermostat (--friction); bussi: stochastic "
        "velocity rescaling; the thermostats need --temperature (default %(default)s)",
    )
    md.add_argument(
        "--temperature", type=float, default=None,
        help="K: the thermostat's target; also draws the initial velocities (default: none, atoms start at rest)",
    )
    md.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default %(default)s)")
    md.add_argument("--log", default="bodyorder.h5", help="H5MD log file (default %(default)s)")
    md.add_argument("--log-every", type=int, default=1, help="log every n steps (default %(default)s)")
    md.add_argument(
        "--flush-every", type=int, default=10,
        help="write the buffered frames to disk every n logged frames; a crash loses at most n-1 "
        "(default %(default)s)",
    )
    md.add_argument("--per-atom", action="store_true", help="also log per-atom body-order energies")
    md.add_argument(
        "--full-model-every", type=int, default=0,
        help="log the plain model's energy every m steps (default %(default)s: never)",
    )
    md.add_argument(
        "--seed", type=int, default=None,
        help="random seed of the initial velocities and the thermostat, for reproducible runs "
        "(default: %(default)s, a fresh seed every run)",
    )
    md.add_argument("--overwrite", action="store_true", help="replace an existing log")
    md.add_argument(
        "--append", action="store_true",
        help="continue an existing log from its last frame (its positions, velocities and cell; the "
        "structure file only gives species and order) and record this command line in it",
    )
    md.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dask_options(md)
    md.set_defaults(run=_cmd_md)


def _check_options(args, log: Path) -> None:
    """Refuse, before anything runs, options that contradict each other or a log that
    cannot be written as asked."""
    if args.steps < 1:
        raise CommandError(f"--steps must be a positive number of steps, got {args.steps}")
    if args.timestep <= 0:
        raise CommandError(f"--timestep must be positive (fs), got {args.timestep}")
    if args.ensemble != "nve" and args.temperature is None:
        raise CommandError(f"--ensemble {args.ensemble} needs --temperature")
    if args.overwrite and args.append:
        raise CommandError("--overwrite and --append exclude each other")
    if args.append and not log.exists():
        raise CommandError(
            f"--append needs an existing log; '{log}' does not exist (use without --append to start one)"
        )
    if log.exists() and not (args.overwrite or args.append):
        raise CommandError(f"log '{log}' exists: pass --overwrite to replace it or --append to continue it")
    if not log.parent.exists():
        raise CommandError(f"folder '{log.parent}' for the log does not exist")
    if log.exists() and args.overwrite and not writable(log):
        raise CommandError(f"log '{log}' is not writable")
    if not log.exists() and not writable(log.parent):
        raise CommandError(f"cannot write the log in '{log.parent}'")


def _resume(args, atoms, log: Path) -> tuple[int, str]:
    """With --append, continue from the log's last frame (md.resume_from_log): its step,
    and the note that says so (printed once the run has started well). A run in another
    ensemble would mix two ensembles in one log: refused."""
    from ..h5md import read_log
    from ..md import resume_from_log

    data = read_log(log)
    before = (data.metadata.get("ensemble"), float(data.metadata.get("temperature_K") or 0.0))
    now = (args.ensemble, float(args.temperature or 0.0))
    if before[0] is not None and (before[0] != now[0] or (now[0] != "nve" and before[1] != now[1])):
        at = f" at {before[1]:g} K" if before[0] != "nve" else ""
        options = f"--ensemble {before[0]}" + (f" --temperature {before[1]:g}" if before[0] != "nve" else "")
        raise CommandError(f"log '{log}' was run in the {before[0]} ensemble{at}: continue it with {options}, "
                           "or start a new log")
    step = resume_from_log(atoms, log, structure=f"'{args.structure}'")
    what = "positions, velocities and cell" if data.cells is not None else "positions and velocities"
    note = (f"note: continuing '{log}' from its last frame (step {step}): {what} come from the log; "
            f"'{args.structure}' only supplied the species and their order")
    return step, note


def _frames_held(log: Path) -> str:
    """'; log 'run.h5' closed, it holds N frames up to step S' for the messages of a
    run that stopped early."""
    from ..h5md import read_log

    if not log.exists():
        return ""
    steps = read_log(log).step
    return f"; log '{log}' closed, it holds {len(steps)} frames" + (
        f" up to step {int(steps[-1])}" if len(steps) else "")


def _cmd_md(args) -> int:
    from ..errors import DistributedError
    from ..md import run_md

    log = Path(args.log)
    _check_options(args, log)
    check_model(args.model)
    atoms = read_structure(args.structure)
    step_offset, note = _resume(args, atoms, log) if args.append else (0, None)
    mode = "append" if args.append else ("overwrite" if args.overwrite else "create")
    try:
        with dask_client(args) as client, warnings_to_stderr(args.command):
            result = run_md(
                atoms,
                make_calculator(args, atoms, client),
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
                initialise_velocities=not args.append,
                progress=not args.quiet,
                command_line=args.command_line,
            )
    except KeyboardInterrupt:  # a second Ctrl-C: the log was closed on the way out
        result = None
    except DistributedError as error:  # the log was closed on the way out
        raise DistributedError(f"{error}{_frames_held(log)}") from None
    if result is None or result.interrupted:
        print(f"interrupted: {_frames_held(log)[2:]}", file=sys.stderr)
        return 130
    if note:
        print(note, file=sys.stderr)
    steps = "step" if result.steps_done == 1 else "steps"
    print(f"ran {result.steps_done} {steps} (last step {result.last_step}); log written to '{log}'")
    return 0
