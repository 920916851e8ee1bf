"""The ``ase-bodyorder`` command line.

One module per command family registers its subcommands and handlers (``md``,
``decompose``, ``curves``, ``compare``, ``export``, ``info``/``report``/``models``,
``ipi``); what
they share is in :mod:`.common`. Errors are handled here, in one place, by class
(:mod:`ase_bodyorder.errors`):

- :class:`~ase_bodyorder.errors.InputError` (a bad option, a file that is missing or not
  what was expected, a model that does not fit the structure) and the file errors of
  the operating system: one line on stderr, exit 2;
- :class:`~ase_bodyorder.errors.RunError` (an expansion too large, a lost Dask
  scheduler, a failed reference), memory and other OS errors: one line, exit 1;
- anything else is a bug: its traceback and exit 1. ``--debug`` (before the command)
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
import os
import sys
import traceback

from ..errors import InputError, RunError
from . import compare, curves, decompose, export, fit, info, ipi, md

__all__ = ["build_parser", "main"]

#: what registers each command, in the order of ``--help``
COMMANDS = (
    md.register,
    decompose.register,
    info.register_logs,
    curves.register,
    compare.register,
    export.register,
    fit.register,
    info.register_models,
    ipi.register,
)

#: operating-system errors about the user's files: bad input (exit 2)
_FILE_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)
#: errors that end a run that was asked for correctly (exit 1, one line)
_RUN_ERRORS = (RunError, MemoryError, OSError)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: each command module registers its own."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="ase-bodyorder",
        description="Many-body expansions of machine-learning interatomic potentials.",
    )
    parser.add_argument("--version", action="version", version=f"ase-bodyorder {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="print the full traceback of every error (give it before the command)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in COMMANDS:
        register(subparsers)
    return parser


def _exit_code(error: BaseException) -> int | None:
    """2 for the user's input, 1 for a run that could not go on, None for a bug."""
    if isinstance(error, (InputError, *_FILE_ERRORS)):
        return 2
    if isinstance(error, _RUN_ERRORS):
        return 1
    return None


def _quiet_broken_pipe() -> int:
    """The reader of stdout went away (``| head``). As the Python docs advise (signal
    module, "Note on SIGPIPE"), point stdout at devnull so that the flush at exit cannot
    raise again, and exit quietly; the docs' example exits 1, we exit 141 (128 +
    SIGPIPE) as a process killed by SIGPIPE would, like the shell's tools, so that the
    code is not mistaken for an error of ours."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no real stdout (e.g. captured)
        pass
    return 141


def main(argv: list[str] | None = None) -> int:
    """Run ``ase-bodyorder`` with ``argv`` (default: the process's arguments); returns
    the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    # what a log records as this run's command line
    args.command_line = list(sys.argv) if argv is None else ["ase-bodyorder", *argv]
    name = " ".join(["ase-bodyorder", args.command, *([args.ipi_command] if getattr(args, "ipi_command", None) else [])])
    try:
        code = args.run(args)
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        code = _exit_code(error)
        if args.debug or code is None:
            traceback.print_exc()
        if code is not None:
            print(f"{name}: error: {error}", file=sys.stderr)
            return code
        print(
            f"{name}: internal error: {type(error).__name__}: {error}\n"
            "This is probably a bug in ase-bodyorder; please report it with the traceback above.",
            file=sys.stderr,
        )
        return 1
