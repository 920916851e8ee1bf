"""The ``ase-bodyorder`` command line.

Errors: problems with the user's input (a bad option, a file that is missing or not
what was expected, a model that does not fit the structure) print one line on stderr;
anything unexpected (a bug) prints its traceback too. ``--debug`` (before the command)
prints the traceback of every error.

Exit codes:

- 0: success
- 1: a runtime error (an expansion too large, disk full, an internal error)
- 2: bad usage or input (options, files, models, logs that do not match)
- 3: ``ipi driver``: the i-PI server went away
- 130: interrupted (Ctrl-C); ``md`` closes its log first and says where it stopped
- 141: standard output was closed early by its reader (``| head``), as a process
  killed by SIGPIPE would exit; nothing is printed
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import traceback
import warnings
from pathlib import Path

__all__ = ["main"]


class CommandError(Exception):
    """A problem with the user's input: printed as one line, exit code 2."""


def _positive_order(text: str) -> int:
    """argparse type of -K/--max-order: an integer >= 1 (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (the body order K), got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (the body order K), got {value}")
    return value


def _add_model_options(parser: argparse.ArgumentParser, order_required: bool = True) -> None:
    parser.add_argument(
        "--model",
        default="default",
        help="metatomic .pt model file, a shipped model's name (see 'ase-bodyorder models'), or a "
        "SevenNet model (sevennet-0, ... or a .pth file; the sevennet extra); "
        "default: '%(default)s', the shipped default model",
    )
    parser.add_argument(
        "--max-order", "-K", type=_positive_order, required=order_required, metavar="K",
        help="body order K >= 1: the expansion keeps every subcluster of at most K bodies",
    )
    parser.add_argument("--cutoff", type=float, default=None, help="locality radius in A (default: the model's)")
    parser.add_argument(
        "--fragments",
        default=None,
        help="bodies: 'molecules' (covalently bonded groups of the structure) or a JSON list of "
        "atom-index lists (default: every atom is a body)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: the model's preferred)")
    parser.add_argument(
        "--dtype", choices=["float32", "float64"], default=None,
        help="precision of a SevenNet model (default float64; float32 is faster, docs/sevennet.md); "
        "a metatomic model's is fixed at export",
    )


def add_dask_options(parser: argparse.ArgumentParser) -> None:
    """``--workers N`` | ``--scheduler ADDRESS`` and ``--threads-per-worker``."""
    group = parser.add_argument_group("Dask (spread the work over workers; the 'distributed' extra)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N", help="start a local Dask cluster of N worker processes")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS", help="join a running Dask cluster, e.g. tcp://host:8786")
    group.add_argument(
        "--threads-per-worker", type=int, default=1, metavar="T",
        help="torch threads of each local worker, with --workers (default %(default)s)",
    )


@contextlib.contextmanager
def dask_client(args):
    """The ``Client`` that ``--workers``/``--scheduler`` ask for (None without them),
    closed (with its local cluster) on the way out."""
    if args.threads_per_worker != 1 and args.workers is None:
        raise CommandError(
            "--threads-per-worker applies to the local workers of --workers; the workers of a "
            "--scheduler have their own (dask worker --nthreads)"
        )
    if args.workers is None and args.scheduler is None:
        yield None
        return
    import logging

    from .distributed import _require_distributed, connect, local_client

    if args.workers is not None and args.workers < 1:
        raise CommandError(f"--workers must be a positive number of workers, got {args.workers}")
    if args.threads_per_worker < 1:
        raise CommandError(f"--threads-per-worker must be a positive number, got {args.threads_per_worker}")
    cores = os.cpu_count() or 1
    if args.workers is not None and args.workers * args.threads_per_worker > cores:
        print(
            f"warning: {args.workers} workers x {args.threads_per_worker} threads on {cores} cores: "
            "they will slow each other down",
            file=sys.stderr,
        )
    _require_distributed()  # imported first: it configures its loggers, set below

    # Dask logs every worker start and stop at INFO: keep warnings and errors; a lost
    # scheduler is reported by the command itself (DistributedError), not as a traceback
    logging.getLogger("distributed").setLevel(logging.WARNING)
    logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    if args.workers is not None:
        client = local_client(args.workers, args.threads_per_worker)
    else:
        try:
            client = connect(args.scheduler)
        except (OSError, TimeoutError, ValueError) as error:
            raise CommandError(f"--scheduler {args.scheduler}: {error}") from None
        if not client.nthreads():
            print(f"note: the Dask scheduler at {args.scheduler} has no workers yet: waiting for one",
                  file=sys.stderr)
    try:
        yield client
    finally:
        client.close()


def _check_model(model: str) -> None:
    """Refuse, before anything is loaded, a --model that is neither a file nor a known
    name, listing the names that would work. The one place that knows the names."""
    from .backends.sevennet import PRETRAINED, is_sevennet_model
    from .models import list_models

    names = list_models()
    if model == "default" or model in names or Path(model).exists() or is_sevennet_model(model):
        return
    known = f"shipped models: {', '.join(names) or 'none'}; SevenNet models: {', '.join(sorted(PRETRAINED))}"
    if model.endswith(".pt") or model.endswith(".pth") or "/" in model or "\\" in model:
        raise CommandError(f"model file '{model}' does not exist (and no known model has that name; {known})")
    raise CommandError(f"no model file or known model named '{model}'; {known}")


def _calculator(args, atoms=None, client=None):
    from .calculator import MODEL_CUTOFF, BodyOrderCalculator
    from .expansion import molecules

    _check_model(args.model)
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
        dtype=args.dtype,
        client=client,
    )


_EXPECTED = "expected a structure file that ASE can read (e.g. extxyz, xyz, cif, POSCAR)"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _read_structure(path: str, index=-1):
    """One ``Atoms`` (``index=-1``: the last frame) or a non-empty list of them
    (``index=":"``), or a CommandError saying what was expected and what went wrong."""
    import ase
    import ase.io
    from ase.io.formats import filetype, ioformats

    file = Path(path)
    if not file.exists():
        raise CommandError(f"structure file '{path}' does not exist")
    if file.is_dir():
        raise CommandError(f"'{path}' is a folder; {_EXPECTED}")
    with open(file, "rb") as handle:
        if handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
            raise CommandError(_hdf5_message(file))
    try:
        fmt = filetype(str(file))
        guess = f"ASE guessed its format as '{fmt}' (from its name or contents)"
    except Exception as error:
        fmt = None
        guess = f"ASE could not guess its format ({type(error).__name__}: {error})"
    if fmt is not None and fmt not in ioformats:  # filetype falls back on the suffix
        raise CommandError(
            f"could not read a structure from '{path}': ASE could not tell its format and has no "
            f"reader for its suffix '{fmt}'; {_EXPECTED}"
        )
    try:
        result = ase.io.read(str(file), index=index)
    except StopIteration:  # ase.io.read's way of saying that it found no frame
        raise CommandError(
            f"could not read a structure from '{path}': {guess} and found no frame in it; {_EXPECTED}"
        ) from None
    except Exception as error:
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise CommandError(
            f"could not read a structure from '{path}': {guess}, which failed with {reason}; {_EXPECTED}"
        ) from None
    frames = result if isinstance(result, list) else [result]
    if not frames:
        raise CommandError(
            f"could not read a structure from '{path}': {guess} and found no frame in it; {_EXPECTED}"
        )
    wrong = [f for f in frames if not isinstance(f, ase.Atoms)]
    if wrong:
        raise CommandError(
            f"could not read a structure from '{path}': {guess}, whose reader returned "
            f"{type(wrong[0]).__name__} instead of atoms; {_EXPECTED}"
        )
    return result


def _is_log(file: Path) -> bool:
    """Whether ``file`` is an ase-bodyorder log (H5MD written by md or ipi run)."""
    try:
        import h5py

        with h5py.File(file, "r", locking=False) as h5:
            return "h5md" in h5 and "parameters/ase_bodyorder" in h5
    except Exception:
        return False


def _hdf5_message(file: Path) -> str:
    """Why an HDF5 file is not a structure, and what to do with an ase-bodyorder log."""
    is_log = _is_log(file)
    if is_log:
        return (
            f"'{file}' is an ase-bodyorder MD log (H5MD), not a structure file: "
            f"'ase-bodyorder info {file}' and 'ase-bodyorder report {file}' read logs, "
            f"'ase-bodyorder decompose {file}' decomposes its frames, "
            f"and 'md STRUCTURE --append --log {file}' continues one; {_EXPECTED}"
        )
    return f"'{file}' is an HDF5 file, which ASE cannot read as a structure; {_EXPECTED}"


# ----------------------------------------------------------------------------------


def _cmd_md(args) -> int:
    from .distributed import DistributedError
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
    if args.append and not log.exists():
        raise CommandError(
            f"--append needs an existing log; '{log}' does not exist (use without --append to start one)"
        )
    if log.exists() and not (args.overwrite or args.append):
        raise CommandError(f"log '{log}' exists: pass --overwrite to replace it or --append to continue it")
    if not log.parent.exists():
        raise CommandError(f"folder '{log.parent}' for the log does not exist")
    if log.exists() and args.overwrite and not _writable(log):
        raise CommandError(f"log '{log}' is not writable")
    if not log.exists() and not _writable(log.parent):
        raise CommandError(f"cannot write the log in '{log.parent}'")

    _check_model(args.model)
    atoms = _read_structure(args.structure)
    step_offset, initialise = 0, True
    if args.append:
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
        what = "positions, velocities and cell" if previous.cells is not None else "positions and velocities"
        print(
            f"note: continuing '{log}' from its last frame (step {step_offset}): {what} come from the log; "
            f"'{args.structure}' only supplied the species and their order",
            file=sys.stderr,
        )

    mode = "append" if args.append else ("overwrite" if args.overwrite else "create")
    try:
        with dask_client(args) as client, _warnings_to_stderr(args.command):
            calculator = _calculator(args, atoms, client)
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
                command_line=args.command_line,
            )
    except KeyboardInterrupt:  # a second Ctrl-C: the log was closed on the way out
        result = None
    except DistributedError as error:  # the log was closed on the way out
        data = read_log(log) if log.exists() else None
        held = "" if data is None else f"; log '{log}' closed, it holds {len(data.step)} frames" + (
            f" up to step {int(data.step[-1])}" if len(data.step) else "")
        raise DistributedError(f"{error}{held}") from None
    if result is None or result.interrupted:
        data = read_log(log)
        last = int(data.step[-1]) if len(data.step) else None
        print(f"interrupted: log '{log}' closed, it holds {len(data.step)} frames up to step {last}", file=sys.stderr)
        return 130
    print(f"ran {result.steps_done} steps (last step {result.last_step}); log written to '{log}'")
    return 0


@contextlib.contextmanager
def _warnings_to_stderr(command: str):
    """Show the run's warnings (runaway dynamics) as one plain line on stderr each,
    above the progress bar; other warnings keep Python's usual display."""
    from .md import RunawayWarning

    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, RunawayWarning):
            from tqdm.auto import tqdm

            tqdm.write(f"ase-bodyorder {command}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", RunawayWarning)
        warnings.showwarning = showwarning
        yield


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK)


def _frames_of(path: str) -> list:
    """Every frame of a structure file, or of an ase-bodyorder log (H5MD)."""
    file = Path(path)
    if file.is_file():
        with open(file, "rb") as handle:
            is_hdf5 = handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
        if is_hdf5 and _is_log(file):
            from .h5md import read_log

            return read_log(file).frames()
    return _read_structure(path, index=":")


def _cmd_decompose(args) -> int:
    from .distributed import decompose_frames

    names, frames = [], []
    for path in args.structures:
        these = _frames_of(path)
        names += [path] if len(these) == 1 else [f"{path}@{f}" for f in range(len(these))]
        frames += these
    with dask_client(args) as client:
        # with --fragments molecules, the molecules of the first frame (as md finds them)
        calculator = _calculator(args, frames[0], client)
        rows = _DecompositionWriter(args.format, args.max_order, args.full_model, max(map(len, names)))
        results = decompose_frames(
            frames, calculator, full_model=args.full_model, progress=not args.quiet and len(frames) > 1
        )
        # each row as soon as it and the rows before it are done
        for name, atoms, result in zip(names, frames, results):
            rows.write(name, len(atoms), result)
        rows.close()
    return 0


class _DecompositionWriter:
    """Rows of ``decompose`` on stdout one at a time: CSV, a table with fixed columns,
    or a JSON list (valid once closed)."""

    def __init__(self, fmt: str, order: int, full: bool, name_width: int):
        self.fmt, self.order, self.full, self.count = fmt, order, full, 0
        # energies in eV, n_k are counts (the k-body subclusters)
        header = ["structure", "n_atoms"] + [f"dE_{k}/eV" for k in range(1, order + 1)] + [f"E^({order})/eV"]
        header += [f"n_{k}" for k in range(1, order + 1)]
        if full:
            header += ["E_model/eV", "remainder/eV"]
        self.widths = [max(name_width, 9), 7] + [max(len(h), 8 if h.startswith("n_") else 14) for h in header[2:]]
        if fmt == "json":
            print("[", flush=True)
        elif fmt == "csv":
            print(",".join(header), flush=True)
        else:
            print("  ".join(h.rjust(w) for h, w in zip(header, self.widths)), flush=True)

    def write(self, name: str, n_atoms: int, r) -> None:
        if self.fmt == "json":
            record = json.dumps({"structure": name, "n_atoms": n_atoms, **r.as_dict(), "per_atom": None}, indent=1)
            print(("," if self.count else "") + record, flush=True)
        else:
            line = [name, str(n_atoms)] + [f"{e:.6f}" for e in r.body_order_energies]
            line += [f"{r.truncated_energies[-1]:.6f}"] + [str(c) for c in r.counts]
            if self.full:
                line += [f"{r.full_energy:.6f}", f"{r.remainder:.6f}"]
            if self.fmt == "csv":
                print(",".join(line), flush=True)
            else:
                print("  ".join(v.rjust(w) for v, w in zip(line, self.widths)), flush=True)
        self.count += 1

    def close(self) -> None:
        if self.fmt == "json":
            print("]")
        elif self.fmt != "csv":
            order = self.order
            legend = (
                f"dE_k: k-body contribution; E^({order}): energy truncated at K = {order}; "
                "n_k: number of k-body subclusters"
            )
            if self.full:
                legend += "; E_model: the plain model; remainder: E_model - E^(K)"
            print(legend)


def _reference_calculator(text: str, other_choices: str = "'shipped'"):
    """--reference: 'fci', or MODULE:NAME / FILE.py:NAME of an ASE calculator class or
    factory, called without arguments. ``other_choices`` names what else the command's
    --reference takes, for the error."""
    from ase.calculators.calculator import BaseCalculator

    if text.lower() == "fci":
        from .fci import FCICalculator

        return FCICalculator()
    module, _, name = text.rpartition(":")
    if not module or not name:
        raise CommandError(
            f"--reference must be {other_choices}, 'fci', MODULE:NAME or FILE.py:NAME of an ASE calculator, got '{text}'"
        )
    import importlib
    import importlib.util

    try:
        if module.endswith(".py"):
            if not Path(module).is_file():
                raise ImportError(f"file '{module}' does not exist")
            spec = importlib.util.spec_from_file_location(Path(module).stem, module)
            loaded = importlib.util.module_from_spec(spec)
            # as `python FILE.py` would: the file's folder first, for its own imports
            sys.path.insert(0, str(Path(module).resolve().parent))
            try:
                spec.loader.exec_module(loaded)
            finally:
                sys.path.pop(0)
        else:
            loaded = importlib.import_module(module)
    except ImportError as error:
        hint = "" if module.endswith(".py") else " (a module of your own: give FILE.py:NAME, or put its folder on PYTHONPATH)"
        raise CommandError(f"--reference {text}: cannot import {module} ({error}){hint}") from None
    except Exception as error:  # the user's own code failed while importing
        raise CommandError(f"--reference {text}: importing {module} failed: {type(error).__name__}: {error}") from None
    if not hasattr(loaded, name):
        raise CommandError(f"--reference {text}: {module} has no {name}")
    factory = getattr(loaded, name)
    if isinstance(factory, BaseCalculator):
        return factory  # a calculator made in the module
    if not callable(factory):
        raise CommandError(
            f"--reference {text}: {name} is an object of type {type(factory).__name__}, "
            "not an ASE calculator, its class or a function that makes one"
        )
    try:
        calculator = factory()
    except Exception as error:
        raise CommandError(
            f"--reference {text}: calling {name}() without arguments failed ({type(error).__name__}: {error}); "
            "give a class or function that makes the calculator without arguments"
        ) from None
    if not isinstance(calculator, BaseCalculator):
        raise CommandError(
            f"--reference {text}: {name}() gave an object of type {type(calculator).__name__}, not an ASE calculator"
        )
    return calculator


def _cmd_compare(args) -> int:
    from .compare import compare_expansions, shipped_clusters
    from .models import list_models

    if args.output:
        _check_output(Path(args.output), args.overwrite)
    if args.structures:
        clusters = [atoms for path in args.structures for atoms in _frames_of(path)]
    else:
        clusters = shipped_clusters()
    reference = args.reference or ("fci" if args.structures else "shipped")
    if reference == "shipped" and args.structures:
        raise CommandError(
            "--reference shipped covers only the shipped H8 clusters (give no structures); "
            "for your own structures use --reference fci or MODULE:NAME"
        )
    if reference != "shipped":
        reference = _reference_calculator(reference)
    models = args.model or list_models()
    for model in models:
        _check_model(model)
    if args.label and len(args.label) != len(models):
        raise CommandError(f"{len(args.label)} --label for {len(models)} models: give one per --model")
    if args.learning and not args.output:
        raise CommandError("--learning draws the figure: give -o FILE.png")
    if args.max_order is not None and args.max_order < 2:
        raise CommandError(f"compare shows the orders k >= 2: -K must be at least 2, got {args.max_order}")
    if args.cutoff is not None and not args.cutoff > 0:
        raise CommandError(f"--cutoff must be a positive distance in A, got {args.cutoff}")
    if args.cutoff is None and any(atoms.pbc.any() for atoms in clusters):
        raise CommandError("periodic structures need --cutoff (every subset is defined for finite clusters only)")
    counts: dict = {}
    result = compare_expansions(
        clusters, models, reference, max_order=args.max_order, cutoff=args.cutoff,
        cache=None if args.no_cache else (args.cache or True), labels=args.label, counts=counts,
    )
    if counts.get("cache_file") is not None or counts.get("computed"):
        where = f" (cache: {counts['cache_file']})" if counts.get("cache_file") else " (no cache)"
        print(f"reference energies: {counts['computed']} computed, {counts['cached']} from the cache{where}",
              file=sys.stderr)
    text = {"table": result.table, "csv": result.csv, "json": result.to_json}[args.format]()
    print(text.rstrip("\n"))
    if args.output:
        result.plot(args.output, learning=args.learning)
        print(f"figure written to '{args.output}'", file=sys.stderr)
    return 0


def _check_output(path: Path, overwrite: bool) -> None:
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise CommandError(f"figure '{path}' must end in .png, .pdf or .svg")
    if path.exists() and not overwrite:
        raise CommandError(f"'{path}' exists: pass --overwrite to replace it")
    if not path.parent.exists():
        raise CommandError(f"folder '{path.parent}' for the figure does not exist")


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
    import ase.data
    import numpy as np

    from .analysis import dimer_curve, plot_curves, trimer_curve, write_lammps_table
    from .calculator import make_backend

    models = args.model or ["default"]
    for model in models:
        _check_model(model)
    # everything that can be refused is refused before any model runs
    if args.output:
        _check_output(Path(args.output), args.overwrite)
    if args.lammps_table:
        table = Path(args.lammps_table)
        if args.kind == "trimer":
            raise CommandError("--lammps-table writes a dimer's eps_2(r): use --kind dimer or both")
        if table.exists() and not args.overwrite:
            raise CommandError(f"'{table}' exists: pass --overwrite to replace it")
        if not table.parent.exists():
            raise CommandError(f"folder '{table.parent}' for the LAMMPS table does not exist")
    unknown = [s for s in args.species if s not in ase.data.atomic_numbers or s == "X"]
    if unknown:
        raise CommandError(f"--species takes element symbols (e.g. H, C, Si), got {unknown}")
    most = {"dimer": 2, "trimer": 3, "both": 3}[args.kind]
    if len(args.species) > most:
        raise CommandError(
            f"--kind {args.kind} takes at most {most} species (the {'pair' if most == 2 else 'triple'}), "
            f"got {len(args.species)}: {' '.join(args.species)}"
        )
    pair = args.species[:2] if len(args.species) >= 2 else args.species * 2
    triple = (args.species * 3)[:3] if len(args.species) < 3 else args.species[:3]
    kinds = ("dimer", "trimer") if args.kind == "both" else (args.kind,)
    if args.points is not None and args.points < 2:
        raise CommandError(f"--points must be at least 2, got {args.points}")

    reference, reference_calculator = _curves_reference(args, pair)
    if reference is not None and args.min is None and args.max is None:
        if args.points is not None:
            raise CommandError(
                f"--points sets the points between --min and --max; the reference curve brings its own "
                f"{len(reference.distance)}: give --min and --max too, or leave --points out"
            )
        distances = reference.distance  # the models at the reference's own points
    else:
        low = 0.5 if args.min is None else args.min
        high = 5.0 if args.max is None else args.max
        if not 0 < low < high:
            got = [f"{option} {value:g}" + (" (its default)" if given is None else "")
                   for option, value, given in (("--min", low, args.min), ("--max", high, args.max))]
            raise CommandError(f"need 0 < --min < --max (A), got {', '.join(got)}")
        distances = np.linspace(low, high, 91 if args.points is None else args.points)

    # the models' species, checked after loading (cheap) and before any curve
    backends = []
    for model in models:
        try:
            backend = make_backend(model, args.device)
            for kind in kinds:
                species = pair if kind == "dimer" else triple
                backend.check_species(np.array([ase.data.atomic_numbers[s] for s in species]))
        except ValueError as error:
            raise CommandError(f"--model {model}: {error}") from None
        backends.append((model, backend))

    # a reference calculator first: one that fails should fail before the models' work
    curves = []
    if reference_calculator is not None:
        label = f"{args.reference} (reference)"
        for kind in kinds:
            species = pair if kind == "dimer" else triple
            try:
                if kind == "dimer":  # no forces: the LAMMPS table is a model's
                    curve = dimer_curve(reference_calculator, species, distances, label=label, forces=False)
                else:
                    curve = trimer_curve(reference_calculator, species, distances, label=label)
            except Exception as error:
                raise CommandError(
                    f"--reference {args.reference} failed on the {'-'.join(species)} {kind} between "
                    f"{distances[0]:g} and {distances[-1]:g} A: {type(error).__name__}: {error}"
                ) from None
            curve.reference = True
            curves.append(curve)
    model_curves = []
    for model, backend in backends:
        if "dimer" in kinds:
            model_curves.append(dimer_curve(backend, pair, distances, label=model))
        if "trimer" in kinds:
            model_curves.append(trimer_curve(backend, triple, distances, label=model))
    curves = model_curves + curves

    columns = [f"{c.label}:{c.kind}_eV" for c in curves]
    values = [c.energy for c in curves]
    if reference is not None:
        columns.append(f"{reference.label}:dimer_eV")
        # the reference at the same distances (interpolated only when --min/--max moved
        # them; nan outside its range: a reference is not extrapolated)
        same = len(reference.distance) == len(distances) and np.allclose(reference.distance, distances)
        inside = (distances >= reference.distance[0]) & (distances <= reference.distance[-1])
        interpolated = np.where(inside, np.interp(distances, reference.distance, reference.energy), np.nan)
        values.append(reference.energy if same else interpolated)
    print("distance_A," + ",".join(columns))
    for i, d in enumerate(distances):
        # round-off below the printed digits has no sign
        print(f"{d:.4f}," + ",".join(f"{v[i]:.8f}".replace("-0.00000000", "0.00000000") for v in values))
    if args.output:
        Path(args.output).unlink(missing_ok=True)
        plot_curves(curves + ([reference] if reference is not None else []), args.output)
        print(f"plot written to '{args.output}'", file=sys.stderr)
    if args.lammps_table:
        first = model_curves[0]  # a dimer: --kind dimer or both
        Path(args.lammps_table).unlink(missing_ok=True)
        write_lammps_table(first, args.lammps_table)
        print(f"LAMMPS table of {first.label} written to '{args.lammps_table}'", file=sys.stderr)
    return 0


def _curves_reference(args, pair):
    """--reference of curves: (a reference dimer curve, None) for 'pbe' or a JSON
    file; (None, an ASE calculator) for 'fci', MODULE:NAME or FILE.py:NAME; (None,
    None) without one."""
    from .analysis import REFERENCES, reference_curve

    text = args.reference
    if text is None:
        return None, None
    is_curve_file = text.lower().endswith(".json") or (Path(text).is_file() and not text.endswith(".py"))
    if text.lower() != "fci" and (text.lower() in REFERENCES or is_curve_file):
        if args.kind == "trimer":
            raise CommandError(
                f"--reference {text} is a dimer curve; a trimer needs a reference calculator: "
                "--reference fci, MODULE:NAME or FILE.py:NAME (or use --kind both)"
            )
        try:
            return reference_curve(text, pair), None
        except (FileNotFoundError, ValueError) as error:
            raise CommandError(f"--reference: {error}") from None
    if text.endswith(".py"):
        raise CommandError(f"--reference {text}: give the calculator in the file too, as {text}:NAME")
    choices = f"{', '.join(map(repr, REFERENCES))}, FILE.json"
    return None, _reference_calculator(text, choices)


def _cmd_models(args) -> int:
    from .models import DEFAULT_MODEL, list_models, model_card, resolve_model

    for name in list_models():
        card = model_card(name)
        mark = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{mark}: {card.get('summary', '')}")
        print(f"    {resolve_model(name)}")
    _print_sevennet_models()
    return 0


def _print_sevennet_models() -> None:
    """The pretrained SevenNet models the installed sevenn wheel holds (docs/sevennet.md)."""
    from importlib.metadata import version

    from .backends.sevennet import _ALIASES, PRETRAINED, installed_pretrained

    found = installed_pretrained()
    if found is None:
        print(f"SevenNet models ({', '.join(PRETRAINED)}): not installed; "
              "pip install \"ase-bodyorder[sevennet]\"")
        return
    aliases = {name: [a for a, n in _ALIASES.items() if n == name] for name in PRETRAINED}
    for name in PRETRAINED:
        also = f" (also {', '.join(aliases[name])})" if aliases[name] else ""
        where = found.get(name, "not in this sevenn wheel")
        fidelity = f"multi-fidelity, at its {PRETRAINED[name][1]} fidelity" if PRETRAINED[name][1] else "PBE"
        print(f"{name}{also}: SevenNet pretrained (sevenn {version('sevenn')}), universal, {fidelity}; "
              "float64 by default, --dtype float32 for its own precision")
        print(f"    {where}")


# ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="ase-bodyorder",
        description="Many-body expansions of machine-learning interatomic potentials.",
    )
    parser.add_argument("--version", action="version", version=f"ase-bodyorder {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the full traceback of every error (give it before the command)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    md = sub.add_parser("md", help="run MD with a body-order-truncated model and log every step (H5MD)")
    md.add_argument("structure", help="any structure file ASE can read (last frame used)")
    _add_model_options(md)
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

    dec = sub.add_parser("decompose", help="per-structure body-order contributions")
    dec.add_argument(
        "structures", nargs="+",
        help="structure files or ase-bodyorder logs (H5MD); every frame is decomposed, in order",
    )
    _add_model_options(dec)
    dec.add_argument(
        "--format", choices=["table", "csv", "json"], default="table",
        help="output format; energies in eV (default %(default)s)",
    )
    dec.add_argument("--full-model", action="store_true", help="also evaluate the plain model and the remainder")
    dec.add_argument("--quiet", action="store_true", help="no progress bar (shown for several structures)")
    add_dask_options(dec)
    dec.set_defaults(run=_cmd_decompose)

    info = sub.add_parser("info", help="text summary of a log")
    info.add_argument("log", help="H5MD log written by 'ase-bodyorder md' (or 'ipi run')")
    info.set_defaults(run=_cmd_info)

    report = sub.add_parser("report", help="plots of a log (PNG or PDF)")
    report.add_argument("log", help="H5MD log written by 'ase-bodyorder md' (or 'ipi run')")
    report.add_argument(
        "-o", "--output", default=None, help="FILE.png or FILE.pdf (default: the log's name with .png, next to it)"
    )
    report.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    report.set_defaults(run=_cmd_report)

    curves = sub.add_parser(
        "curves",
        help="dimer and trimer body-order curves of models, beside a reference (CSV, plot, LAMMPS table)",
    )
    curves.add_argument(
        "--model", action="append", default=None,
        help="model: metatomic .pt file, a shipped model's name, or a SevenNet name such as sevennet-0 "
        "(repeat for several; default: the shipped default model)",
    )
    curves.add_argument(
        "--reference", default=None,
        help="reference: a dimer curve, 'pbe' (shipped, PySCF) or FILE.json "
        '({"A-B": {"distance_A": [...], "binding_energy_eV": [...]}}; the models are then evaluated at its '
        "distances unless --min/--max are given); or an ASE calculator whose dimer and trimer curves are "
        "computed like the models': 'fci' (FCI/STO-3G, hydrogen), or MODULE:NAME / FILE.py:NAME of a "
        "calculator, its class, or a function that makes one without arguments",
    )
    curves.add_argument(
        "--species", nargs="+", default=["H"],
        help="element symbols: one (H: H-H and H-H-H), two (C H: the C-H dimer and the C-H-C trimer) or "
        "three (the trimer; its first two make the dimer) (default H)",
    )
    curves.add_argument(
        "--kind", choices=["dimer", "trimer", "both"], default="both",
        help="dimer: two-body energy of a pair at distance r; trimer: three-body energy of an "
        "equilateral triangle of side r (default %(default)s)",
    )
    curves.add_argument("--min", type=float, default=None,
                        help="shortest distance in A (default 0.5, or a reference curve's own points)")
    curves.add_argument("--max", type=float, default=None,
                        help="longest distance in A (default 5.0, or a reference curve's own points)")
    curves.add_argument(
        "--points", type=int, default=None, help="number of distances from --min to --max (default 91)"
    )
    curves.add_argument("--device", default=None, help="torch device (default: the model's preferred)")
    curves.add_argument("-o", "--output", default=None, help="plot to FILE.png or FILE.pdf (default: no plot)")
    curves.add_argument(
        "--lammps-table", default=None, metavar="FILE",
        help="write the first model's dimer eps_2(r) as a LAMMPS pair_style table file",
    )
    curves.add_argument("--overwrite", action="store_true", help="replace existing output files")
    curves.set_defaults(run=_cmd_curves)

    cmp = sub.add_parser(
        "compare",
        help="models' body-order contributions beside a reference's (arXiv 2509.14146)",
        description="dE_k of every order for each model beside the reference method's, per "
        "density (info 'density'), over every subset (or every connected subset with --cutoff): "
        "meV/atom, percentage of the reference, wrong signs marked. Reference energies are "
        "cached on disk (see --cache).",
    )
    cmp.add_argument(
        "structures", nargs="*",
        help="clusters (structure files or logs, every frame); default: the shipped held-out H8 "
        "clusters, with the FCI energy of every subcluster",
    )
    cmp.add_argument(
        "--model", action="append", default=None,
        help="a model (file or name; repeat for several, in order); default: every shipped model",
    )
    cmp.add_argument(
        "--reference", default=None,
        help="'shipped' (the shipped FCI subcluster energies; default without structures), 'fci' "
        "(PySCF FCI/STO-3G, hydrogen; default with structures), or MODULE:NAME or FILE.py:NAME of an "
        "ASE calculator class or factory, called without arguments",
    )
    cmp.add_argument("--max-order", "-K", type=_positive_order, default=None, metavar="K",
                     help="highest body order (default: every order)")
    cmp.add_argument("--cutoff", type=float, default=None,
                     help="only subsets connected within this distance (A); default: every subset")
    cmp.add_argument("--format", choices=["table", "csv", "json"], default="table", help="stdout format")
    cmp.add_argument("-o", "--output", default=None, help="figure (.png, .pdf, .svg)")
    cmp.add_argument("--learning", action="store_true",
                     help="the models are stages of one training, in order: the figure shows each "
                     "order's percentage of the reference against the stage")
    cmp.add_argument("--label", action="append", default=None,
                     help="name of each --model in the output (repeat, in order; default: names or file stems)")
    caching = cmp.add_mutually_exclusive_group()
    caching.add_argument("--cache", default=None, help="folder of cached reference energies (default: "
                         "$ASE_BODYORDER_CACHE, else $XDG_CACHE_HOME/ase-bodyorder or ~/.cache/ase-bodyorder); "
                         "keyed by method and geometry: clear it when a reference calculator's code changes")
    caching.add_argument("--no-cache", action="store_true", help="compute every reference energy anew, keep none")
    cmp.add_argument("--overwrite", action="store_true", help="replace an existing figure")
    cmp.set_defaults(run=_cmd_compare)

    models = sub.add_parser("models", help="list the shipped models")
    models.set_defaults(run=_cmd_models)

    from .ipi import add_ipi_commands

    add_ipi_commands(sub, CommandError)
    return parser


def _own_errors() -> tuple[type, ...]:
    """The package's own exception classes for bad input (exit 2, one line)."""
    from .backends.sevennet import MissingDependencyError
    from .checks import LocalityError
    from .h5md import LogExistsError, LogMismatchError

    return (CommandError, LocalityError, LogExistsError, LogMismatchError, MissingDependencyError)


#: other exceptions that mean bad input (exit 2, one line): a ValueError only when this
#: package raised it (see _is_own_validation)
_INPUT_ERRORS = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def _runtime_errors() -> tuple[type, ...]:
    """Exceptions that mean the run could not go on (exit 1, one line)."""
    from .compare import ReferenceFailed
    from .distributed import DistributedError
    from .expansion import ExpansionTooLargeError

    return (ExpansionTooLargeError, DistributedError, ReferenceFailed, MemoryError, OSError)


def _is_user_error(error: BaseException) -> bool:
    if isinstance(error, _own_errors()):
        return True
    return isinstance(error, _INPUT_ERRORS) and _is_own_validation(error)


def _is_own_validation(error: BaseException) -> bool:
    """A ValueError is the user's when this package raised it (its input checks); one
    raised deep inside numpy, torch, h5py... may well be a bug here: show it whole."""
    if not isinstance(error, ValueError):
        return True
    tb = error.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return True
    package = os.path.dirname(os.path.abspath(__file__))
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(package + os.sep)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    # what a log records as this run's command line
    args.command_line = list(sys.argv) if argv is None else ["ase-bodyorder", *argv]
    name = f"ase-bodyorder {args.command}"
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # The reader of stdout went away (``| head``). As the Python docs advise (signal
        # module, "Note on SIGPIPE"), point stdout at devnull so that the flush at exit
        # cannot raise again, and exit quietly; the docs' example exits 1, we exit 141
        # (128 + SIGPIPE) as a process killed by SIGPIPE would, like the shell's tools,
        # so that the code is not mistaken for an error of ours.
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # no real stdout (e.g. captured)
            pass
        return 141
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        user = _is_user_error(error)
        runtime = not user and isinstance(error, _runtime_errors())
        if args.debug or not (user or runtime):
            traceback.print_exc()
        if user or runtime:
            print(f"{name}: error: {error}", file=sys.stderr)
            return 2 if user else 1
        print(
            f"{name}: internal error: {type(error).__name__}: {error}\n"
            "This is probably a bug in ase-bodyorder; please report it with the traceback above.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
