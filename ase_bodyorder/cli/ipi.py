"""``ase-bodyorder ipi driver | run | plugin-path``: i-PI over a socket or in process."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import CommandError, add_dask_options, add_model_options, check_model, dask_client


def register(subparsers) -> None:
    """Add the ``ipi`` command and its subcommands."""
    ipi = subparsers.add_parser("ipi", help="i-PI: serve the body-order driver, or run an i-PI input with the log")
    sub = ipi.add_subparsers(dest="ipi_command", metavar="IPI_COMMAND", required=True)
    _add_driver(sub)
    _add_run(sub)
    plugin = sub.add_parser(
        "plugin-path",
        help="print the path of the i-PI PES file (for i-pi-py_driver -P or <pes_path>)",
        description="Print the path of the installed i-PI PES file (ipi_bodyorder.py), for "
        "i-pi-py_driver -m custom -P PATH or an <ffdirect>'s <pes_path> (docs/ipi.md).",
    )
    plugin.set_defaults(run=_cmd_plugin_path)


def _add_driver(sub) -> None:
    driver = sub.add_parser(
        "driver",
        help="connect a body-order driver to a running i-PI server",
        description="Serve forces of a body-order-truncated model to an i-PI server. Exits "
        "with code 3 when the server goes away or stays silent for --timeout seconds.",
    )
    driver.add_argument("--address", "-a", required=True, help="socket name (UNIX; i-PI's <address>) or host name (TCP)")
    driver.add_argument("--port", "-p", type=int, default=12345, help="TCP port, with --inet (default %(default)s)")
    driver.add_argument("--inet", action="store_true", help="connect over TCP instead of a UNIX socket")
    driver.add_argument(
        "--timeout", type=float, default=600.0, help="give up after this many silent seconds (default %(default)s)"
    )
    driver.add_argument("--template", required=True, help="structure file ASE can read: the species and their order")
    add_model_options(driver, extra=False)
    driver.add_argument(
        "--skin", type=float, default=0.0,
        help="extra radius in A that lets the enumeration of subclusters be reused between steps until an "
        "atom moves more than skin/2 (exact; default %(default)s)",
    )
    driver.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads of this driver (default %(default)s, so that several drivers on one "
        "machine do not oversubscribe its cores; a single driver may take all cores)",
    )
    add_dask_options(driver)
    driver.set_defaults(run=_cmd_driver)


def _add_run(sub) -> None:
    run = sub.add_parser(
        "run",
        help="run an i-PI input in this process, logging every step (H5MD)",
        description="Run an i-PI input whose force field is <ffdirect><pes>custom</pes> (its "
        "<pes_path> may be left out) in this process, writing the many-body log. Paths in the "
        "input are relative to its folder; i-PI's outputs go to --output-dir.",
    )
    run.add_argument("input", help="i-PI XML input with an <ffdirect> force field on the ase-bodyorder PES")
    run.add_argument("--steps", type=int, required=True, help="number of i-PI steps")
    run.add_argument("--log", default="ipi_bodyorder.h5", help="H5MD log file (default %(default)s)")
    run.add_argument(
        "--output-dir", default=".", help="folder for i-PI's own outputs: properties, trajectories, RESTART (default: here)"
    )
    run.add_argument("--flush-every", type=int, default=10, help="write to disk every n frames (default %(default)s)")
    run.add_argument("--per-atom", action="store_true", help="also log per-atom body-order energies")
    run.add_argument("--overwrite", action="store_true", help="replace an existing log")
    run.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    run.set_defaults(run=_cmd_run)


def _cmd_driver(args) -> int:
    from ..ipi import ServerGone, run_client
    from ..ipi_driver import BodyOrderDriver

    if args.threads < 1:
        raise CommandError(f"--threads must be a positive number, got {args.threads}")
    if args.skin < 0:
        raise CommandError(f"--skin must be >= 0 (A), got {args.skin}")
    check_model(args.model)
    with dask_client(args) as client:
        try:
            pes = BodyOrderDriver(
                template=args.template,
                max_order=args.max_order,
                model=args.model,
                cutoff=args.cutoff,
                device=args.device,
                skin=args.skin,
                threads=args.threads,
                scheduler=None if client is None else client.scheduler.address,
            )
        except ValueError as error:
            raise CommandError(str(error)) from None
        if client is not None:
            workers = client.nthreads()
            print(f"subclusters on {len(workers)} Dask workers ({sum(workers.values())} threads) "
                  f"of the scheduler at {client.scheduler.address}", flush=True)
        try:
            served = run_client(pes, args.address, unix=not args.inet, port=args.port, timeout=args.timeout)
        except ServerGone as error:
            print(f"ase-bodyorder ipi driver: {error}", file=sys.stderr)
            return 3
        finally:
            if pes.client is not None:
                pes.client.close()
    print(f"i-PI said EXIT after {served} evaluations")
    return 0


def _cmd_run(args) -> int:
    from ..ipi import run_inprocess

    if args.steps < 1:
        raise CommandError(f"--steps must be a positive number of steps, got {args.steps}")
    if not Path(args.input).is_file():
        raise CommandError(f"i-PI input '{args.input}' does not exist")
    if Path(args.log).exists() and not args.overwrite:
        raise CommandError(f"log '{args.log}' exists: pass --overwrite to replace it")
    if args.threads is not None:
        from ..ipi_driver import set_threads

        set_threads(args.threads)
    summary = run_inprocess(
        args.input,
        args.steps,
        args.log,
        mode="overwrite" if args.overwrite else "create",
        flush_every=args.flush_every,
        per_atom=args.per_atom,
        output_dir=args.output_dir,
    )
    print(
        f"ran {summary['steps']} i-PI step{'s' if summary['steps'] != 1 else ''} with {summary['beads']} "
        f"bead{'s' if summary['beads'] != 1 else ''}; log written to "
        f"'{args.log}', i-PI's outputs to '{args.output_dir}'"
    )
    return 0


def _cmd_plugin_path(args) -> int:
    from ..ipi import PLUGIN

    print(PLUGIN)
    return 0
