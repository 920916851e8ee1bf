"""What several commands share: model and Dask options, loading a model, reading
structures and logs, checking output files.

Nothing here evaluates a model or knows a command's own options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

from ..errors import InputError

__all__ = [
    "ALL_SUBSETS",
    "CommandError",
    "add_dask_options",
    "add_model_options",
    "check_figure_output",
    "check_model",
    "cutoff_value",
    "calculator_cutoff",
    "dask_client",
    "frames_of",
    "make_calculator",
    "positive_order",
    "read_structure",
    "reference_calculator",
    "warnings_to_stderr",
    "writable",
]


class CommandError(InputError):
    """A problem with the user's input found by the command line: one line, exit 2."""


def positive_order(text: str) -> int:
    """argparse type of -K/--max-order: an integer >= 1 (argparse names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (the body order K), got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1 (the body order K), got {value}")
    return value


#: --cutoff's word for "every subset" (BodyOrderCalculator's cutoff=None)
ALL_SUBSETS = "all"


def cutoff_value(text: str) -> float | str:
    """argparse type of --cutoff: a positive distance in A, or 'all' (every subset);
    the same values in every command, whose defaults differ and are stated in its help."""
    if text.lower() == ALL_SUBSETS:
        return ALL_SUBSETS
    if text.lower() == "model":
        return None  # the model's own radius, as when --cutoff is not given
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a distance in A, 'model' (the model's radius) or '{ALL_SUBSETS}' (every subset), got {text!r}"
        ) from None


def add_model_options(parser: argparse.ArgumentParser, order_required: bool = True, *, extra: bool = True) -> None:
    """--model, -K, --cutoff and --device; with ``extra``, --fragments and --dtype too."""
    parser.add_argument(
        "--model",
        default="default",
        help="metatomic .pt model file, a shipped model's name (see 'ase-bodyorder models'), or a "
        "SevenNet model (sevennet-0, ... or a .pth file; the sevennet extra), or a CHGNet model "
        "(chgnet, chgnet-r2scan, ...; the chgnet extra), or a native MACE .model file (the mace extra); "
        "default: '%(default)s', the shipped default model",
    )
    parser.add_argument(
        "--max-order", "-K", type=positive_order, required=order_required, metavar="K",
        help="body order K >= 1: the expansion keeps every subcluster of at most K bodies",
    )
    parser.add_argument(
        "--cutoff", type=cutoff_value, default=None,
        help="locality radius in A, 'model' for the model's radius, or 'all' for every subset (finite "
        "structures only) (default: the model's radius)",
    )
    parser.add_argument("--device", default=None, help="torch device (default: the model's preferred; cpu for SevenNet, CHGNet and MACE)")
    if not extra:
        return
    parser.add_argument(
        "--fragments",
        default=None,
        help="bodies: 'molecules' (covalently bonded groups of the structure) or a JSON list of "
        "atom-index lists (default: every atom is a body)",
    )
    parser.add_argument(
        "--dtype", choices=["float32", "float64"], default=None,
        help="precision of a SevenNet, CHGNet or MACE model (default float64; float32 is faster, docs/universal.md); "
        "a metatomic model's is fixed at export",
    )


def calculator_cutoff(value):
    """What BodyOrderCalculator takes for a parsed --cutoff (None: the model's)."""
    from ..calculator import MODEL_CUTOFF

    if value is None:
        return MODEL_CUTOFF
    return None if value == ALL_SUBSETS else value


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


def _check_dask_options(args) -> None:
    if args.threads_per_worker != 1 and args.workers is None:
        raise CommandError(
            "--threads-per-worker applies to the local workers of --workers; the workers of a "
            "--scheduler have their own (dask worker --nthreads)"
        )
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


@contextlib.contextmanager
def dask_client(args):
    """The ``Client`` that ``--workers``/``--scheduler`` ask for (None without them),
    closed (with its local cluster) on the way out."""
    if args.workers is None and args.scheduler is None:
        _check_dask_options(args)
        yield None
        return
    import logging

    from ..backends.dask import connect, require_distributed
    from ..distributed import local_client

    _check_dask_options(args)
    require_distributed()  # imported first: it configures its loggers, set below
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


def check_model(model: str) -> None:
    """Refuse, before anything is loaded, a --model that is neither a file nor a known
    name, listing the names that would work. The one place that knows the names."""
    from ..backends.chgnet import PRETRAINED as CHGNET, is_chgnet_model
    from ..backends.sevennet import PRETRAINED, is_sevennet_model
    from ..models import list_models

    names = list_models()
    if model == "default" or model in names or Path(model).exists() or is_sevennet_model(model):
        return
    if is_chgnet_model(model):
        return
    known = (f"shipped models: {', '.join(names) or 'none'}; SevenNet models: {', '.join(sorted(PRETRAINED))}; "
             f"CHGNet models: chgnet, {', '.join(sorted(CHGNET))}")
    if model.endswith((".pt", ".pth", ".model")) or "/" in model or "\\" in model:
        raise CommandError(f"model file '{model}' does not exist (and no known model has that name; {known})")
    raise CommandError(f"no model file or known model named '{model}'; {known}")


def make_calculator(args, atoms=None, client=None, structures=None):
    """The BodyOrderCalculator of the model options (``atoms``: the structure whose
    molecules --fragments molecules takes; ``structures``: all that it will see, default
    ``[atoms]``, for the number of bodies). Its progress is shown unless --quiet."""
    from ..calculator import BodyOrderCalculator
    from ..expansion import molecules

    check_model(args.model)
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
    structures = structures if structures is not None else ([atoms] if atoms is not None else [])
    return BodyOrderCalculator(
        args.model,
        _body_order(args.max_order, structures, fragments),
        cutoff=calculator_cutoff(args.cutoff),
        fragments=fragments,
        device=args.device,
        dtype=args.dtype,
        client=client,
        progress=not getattr(args, "quiet", False),
    )


def _body_order(order: int, structures: list, fragments) -> int:
    """-K, or the number of bodies when -K is more than every finite structure has
    (E^(N) of N bodies is the plain model: larger orders add nothing), said on stderr."""
    if not structures or any(atoms.pbc.any() for atoms in structures):
        return order  # a periodic structure has infinitely many bodies
    bodies = max(len(fragments) if fragments else len(atoms) for atoms in structures)
    if order <= bodies:
        return order
    what = "molecules" if fragments else "atoms"
    print(f"note: -K {order} is more than the {bodies} bodies ({what}) of the structure: using K = {bodies}, "
          "every order (the orders add up to the plain model)", file=sys.stderr)
    return bodies
_EXPECTED = "expected a structure file that ASE can read (e.g. extxyz, xyz, cif, POSCAR)"
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def read_structure(path: str, index=-1):
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
            raise CommandError(hdf5_message(file))
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


def is_log(file: Path) -> bool:
    """Whether ``file`` is an ase-bodyorder log (H5MD written by md or ipi run)."""
    try:
        import h5py

        with h5py.File(file, "r", locking=False) as h5:
            return "h5md" in h5 and "parameters/ase_bodyorder" in h5
    except Exception:
        return False


def hdf5_message(file: Path) -> str:
    """Why an HDF5 file is not a structure, and what to do with an ase-bodyorder log."""
    if is_log(file):
        return (
            f"'{file}' is an ase-bodyorder MD log (H5MD), not a structure file: "
            f"'ase-bodyorder info {file}' and 'ase-bodyorder report {file}' read logs, "
            f"'ase-bodyorder decompose {file}' decomposes its frames, "
            f"and 'md STRUCTURE --append --log {file}' continues one; {_EXPECTED}"
        )
    return f"'{file}' is an HDF5 file, which ASE cannot read as a structure; {_EXPECTED}"


# ----------------------------------------------------------------------------------


#: the command-line options of the run_md settings that a RunawayWarning suggests
_REMEDY_OPTIONS = {"timestep_fs": "--timestep", "max_order": "-K", "fragments": "--fragments molecules"}


@contextlib.contextmanager
def warnings_to_stderr(command: str):
    """Show the package's warnings (runaway dynamics, unphysical curves) as one plain
    line on stderr each, above a progress bar; other warnings keep Python's usual display."""
    from ..errors import BodyOrderWarning

    show = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, BodyOrderWarning):
            from tqdm.auto import tqdm

            flags = [_REMEDY_OPTIONS[r] for r in getattr(message, "remedies", ()) if r in _REMEDY_OPTIONS]
            options = f" (options: {', '.join(flags)})" if flags else ""
            tqdm.write(f"ase-bodyorder {command}: warning: {message}{options}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", BodyOrderWarning)
        warnings.showwarning = showwarning
        yield


def writable(path: Path) -> bool:
    """Whether this process may write ``path``."""
    return os.access(path, os.W_OK)


def frames_of(path: str) -> list:
    """Every frame of a structure file, or of an ase-bodyorder log (H5MD)."""
    file = Path(path)
    if file.is_file():
        with open(file, "rb") as handle:
            is_hdf5 = handle.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE
        if is_hdf5 and is_log(file):
            from ..h5md import read_log

            return read_log(file).frames()
    return read_structure(path, index=":")


def check_figure_output(path: Path, overwrite: bool) -> None:
    """Refuse a figure path with the wrong suffix, an existing file without --overwrite,
    or a missing folder."""
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise CommandError(f"figure '{path}' must end in .png, .pdf or .svg")
    if path.exists() and not overwrite:
        raise CommandError(f"'{path}' exists: pass --overwrite to replace it")
    if not path.parent.exists():
        raise CommandError(f"folder '{path.parent}' for the figure does not exist")



def reference_calculator(text: str, other_choices: str = "'shipped'"):
    """--reference as an ASE calculator: 'fci', MODULE:NAME or FILE.py:NAME
    (:func:`ase_bodyorder.loading.load_calculator`); ``other_choices`` names what else
    the command's --reference takes, for the error."""
    from ..loading import load_calculator

    if text.lower() != "fci" and (":" not in text or not all(text.rpartition(":")[::2])):
        raise CommandError(
            f"--reference must be {other_choices}, 'fci', MODULE:NAME or FILE.py:NAME of an ASE calculator, got '{text}'"
        )
    try:
        return load_calculator(text)
    except InputError as error:
        raise CommandError(f"--reference {text}: {error}") from None
