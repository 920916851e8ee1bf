"""``ase-bodyorder export``: a model truncated at body order K as one metatomic model
file, which any engine that runs metatomic models runs (docs/export.md)."""

from __future__ import annotations

from pathlib import Path

from .common import CommandError, check_model, positive_order


def register(subparsers) -> None:
    """Add the ``export`` command."""
    export = subparsers.add_parser(
        "export",
        help="write a model truncated at body order K as a metatomic model (one .pt file for any engine)",
        description="Write E^(K) of a metatomic model as a metatomic model: one TorchScript file that "
        "metatomic's ASE calculator, i-PI, LAMMPS (pair_style metatomic) and other engines run "
        "with nothing of ase-bodyorder installed. 'ase-bodyorder info FILE.pt' shows what it holds.",
    )
    export.add_argument(
        "model", help="a metatomic .pt model file or a shipped model's name (see 'ase-bodyorder models')"
    )
    export.add_argument(
        "--max-order", "-K", type=positive_order, required=True, metavar="K",
        help="body order K, 1 to 4: the file evaluates every connected subcluster of at most K atoms",
    )
    export.add_argument("-o", "--output", required=True, help="the .pt file to write")
    export.add_argument("--variant", default=None,
                        help="the model's energy variant (its output energy/VARIANT) (default: its energy)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    export.set_defaults(run=_cmd_export)


def _cmd_export(args) -> int:
    from ..backends.sevennet import is_sevennet_model
    from ..export import MAX_EXPORT_ORDER, describe_model_file, export_truncated

    output = Path(args.output)
    if output.is_dir():
        raise CommandError(f"-o '{output}' is a folder: give the file to write, e.g. {output / 'truncated.pt'}")
    if output.exists() and not args.overwrite:
        raise CommandError(f"'{output}' exists: pass --overwrite to replace it")
    if args.max_order > MAX_EXPORT_ORDER:
        raise CommandError(f"-K {args.max_order}: the export supports body orders 1 to {MAX_EXPORT_ORDER}")
    if not is_sevennet_model(args.model):  # export_truncated says what to do with SevenNet
        check_model(args.model)
    export_truncated(args.model, args.max_order, output, overwrite=args.overwrite, variant=args.variant)
    print(describe_model_file(output))
    return 0
