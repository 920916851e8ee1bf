"""``ase-bodyorder fit``: an explicitly body-ordered linear model, fitted to energies and
forces and written as a metatomic model (docs/linear.md)."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import CommandError


def register(subparsers) -> None:
    """Add the ``fit`` command."""
    fit = subparsers.add_parser(
        "fit",
        help="fit a linear model of body order K (2, 3 or 4) to energies and forces; write it as a metatomic model",
    )
    fit.add_argument("data", nargs="+", help="structure files ASE reads (extxyz, ...) with energies; forces used when present")
    fit.add_argument("--body-order", "-K", type=int, required=True, metavar="K",
                     help="the model's body order: 2 (radial spectrum), 3 (+ power spectrum) or 4 (+ three-density correlations)")
    fit.add_argument("-o", "--output", required=True, help="the model file to write (.pt; its card beside it as .json)")
    fit.add_argument("--cutoff", type=float, default=4.0,
                     help="the descriptors' radius in A, more than their 0.5 A smoothing (default %(default)s)")
    fit.add_argument("--regularisation", type=float, default=None,
                     help="ridge strength relative to the mean diagonal of the normal equations "
                     "(default: chosen on the validation structures)")
    fit.add_argument("--force-weight", type=float, default=0.01,
                     help="weight of the mean squared force error against the per-atom energy error (default %(default)s)")
    fit.add_argument("--validation", type=float, default=0.1,
                     help="fraction of the structures held out (at least one) to choose the regularisation and "
                     "report held-out errors; 0 needs --regularisation (default %(default)s)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the validation split (default %(default)s)")
    fit.add_argument("--batch-size", type=int, default=500,
                     help="structures featurised at once: memory against time (default %(default)s)")
    fit.add_argument("--energies-only", action="store_true",
                     help="fit the energies alone, even where the data has forces (much faster at K = 4)")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing model file")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(run=_cmd_fit)


def _cmd_fit(args) -> int:
    from ..linear.fit import fit_linear_model

    output = Path(args.output)
    if args.body_order not in (2, 3, 4):
        raise CommandError(f"--body-order must be 2, 3 or 4, got {args.body_order}")
    if output.exists() and not args.overwrite:
        raise CommandError(f"'{output}' exists: pass --overwrite to replace it")
    if not 0 <= args.validation < 1:
        raise CommandError(f"--validation must be a fraction in [0, 1), got {args.validation}")
    if args.validation == 0 and args.regularisation is None:
        raise CommandError("with --validation 0 the regularisation cannot be chosen: give --regularisation")
    if output.suffix != ".pt":
        raise CommandError(f"the model file '{output}' must end in .pt")
    result = fit_linear_model(
        args.data, args.body_order, output, cutoff=args.cutoff, regularisation=args.regularisation,
        force_weight=args.force_weight, validation_fraction=args.validation, batch_size=args.batch_size,
        seed=args.seed, overwrite=args.overwrite, progress=not args.quiet, forces=not args.energies_only,
    )
    print(f"linear model, K = {args.body_order}, regularisation {result.regularisation:g}, fitted in {result.seconds:.1f} s")
    print(f"{'split':<11}{'species':<9}{'structures':>11}{'energy (meV/atom)':>19}{'force (eV/A)':>14}")
    for split, mixes in result.errors.items():
        for mix, row in mixes.items():
            force = row["force_eV_per_A"]  # nan: no force rows (--energies-only, or data without forces)
            force = f"{force:>14.4f}" if force == force else f"{'-':>14}"
            print(f"{split:<11}{mix:<9}{row['structures']:>11}{row['energy_meV_per_atom']:>19.3f}{force}")
    print(f"model written to '{output}' (card: '{output.with_suffix('.json')}')", file=sys.stderr)
    return 0
