"""``ase-bodyorder compare``: models' body-order contributions beside a reference's."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import (
    ALL_SUBSETS,
    CommandError,
    check_figure_output,
    check_model,
    cutoff_value,
    frames_of,
    positive_order,
    reference_calculator,
)


def register(subparsers) -> None:
    """Add the ``compare`` command."""
    cmp = subparsers.add_parser(
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
    cmp.add_argument("--max-order", "-K", type=positive_order, default=None, metavar="K",
                     help="highest body order (default: every order)")
    cmp.add_argument("--cutoff", type=cutoff_value, default=None,
                     help="only subsets connected within this distance (A), or 'all' for every subset "
                     "(default: all; a reference has no radius of its own)")
    cmp.add_argument("--format", choices=["table", "csv", "json"], default="table",
                     help="stdout format (default %(default)s)")
    cmp.add_argument("-o", "--output", default=None, help="figure (.png, .pdf, .svg) (default: none)")
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


def _clusters_and_reference(args):
    """The clusters (the shipped ones by default) and the reference: 'shipped' or an
    ASE calculator."""
    from ..compare import shipped_clusters

    if args.structures:
        clusters = [atoms for path in args.structures for atoms in frames_of(path)]
    else:
        clusters = shipped_clusters()
    reference = args.reference or ("fci" if args.structures else "shipped")
    if reference == "shipped" and args.structures:
        raise CommandError(
            "--reference shipped covers only the shipped H8 clusters (give no structures); "
            "for your own structures use --reference fci or MODULE:NAME"
        )
    if reference != "shipped":
        reference = reference_calculator(reference)
    return clusters, reference


def _check_options(args, models, clusters, cutoff) -> None:
    if args.label and len(args.label) != len(models):
        raise CommandError(f"{len(args.label)} --label for {len(models)} models: give one per --model")
    if args.learning and not args.output:
        raise CommandError("--learning draws the figure: give -o FILE.png")
    if args.max_order is not None and args.max_order < 2:
        raise CommandError(f"compare shows the orders k >= 2: -K must be at least 2, got {args.max_order}")
    if cutoff is not None and not cutoff > 0:
        raise CommandError(f"--cutoff must be a positive distance in A, got {cutoff}")
    if cutoff is None and any(atoms.pbc.any() for atoms in clusters):
        raise CommandError("periodic structures need --cutoff (every subset is defined for finite clusters only)")


def _cmd_compare(args) -> int:
    from ..compare import compare_expansions
    from ..models import list_models

    if args.output:
        check_figure_output(Path(args.output), args.overwrite)
    clusters, reference = _clusters_and_reference(args)
    models = args.model or list_models()
    for model in models:
        check_model(model)
    cutoff = None if args.cutoff == ALL_SUBSETS else args.cutoff
    _check_options(args, models, clusters, cutoff)
    smallest = min(len(atoms) for atoms in clusters)
    if args.max_order is not None and args.max_order > smallest:  # as md and decompose do
        print(f"note: -K {args.max_order} is more than the {smallest} bodies of the smallest cluster: "
              f"using K = {smallest}", file=sys.stderr)
        args.max_order = smallest
    counts: dict = {}
    result = compare_expansions(
        clusters, models, reference, max_order=args.max_order, cutoff=cutoff,
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
