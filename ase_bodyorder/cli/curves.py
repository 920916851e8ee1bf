"""``ase-bodyorder curves``: dimer and trimer body-order curves of models, beside a
reference (CSV on stdout, a plot, a LAMMPS pair table)."""

from __future__ import annotations

import sys
from pathlib import Path

from .common import CommandError, check_figure_output, check_model, warnings_to_stderr

#: --species defaults, --min/--max (A) and the number of points without a reference curve
_DEFAULT_RANGE = (0.5, 5.0, 91)


def register(subparsers) -> None:
    """Add the ``curves`` command."""
    curves = subparsers.add_parser(
        "curves",
        help="dimer and trimer body-order curves of models, beside a reference (CSV, plot, LAMMPS table)",
    )
    curves.add_argument(
        "--model", action="append", default=None,
        help="model: metatomic .pt file, a shipped model's name, or a SevenNet or CHGNet name such as sevennet-0, chgnet "
        "(repeat for several; default: the shipped default model)",
    )
    curves.add_argument(
        "--reference", default=None,
        help="the reference, drawn dashed. Either a dimer curve: 'pbe' (PBE curves shipped with the package) "
        'or FILE.json ({"A-B": {"distance_A": [...], "binding_energy_eV": [...]}}), whose distances the '
        "models are then evaluated at unless --min/--max are given. Or an ASE calculator, whose dimer and "
        "trimer curves are computed like the models': 'fci' (FCI/STO-3G, hydrogen), or MODULE:NAME or "
        "FILE.py:NAME of a calculator, its class, or a function that makes one without arguments "
        "(default: none)",
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
    curves.add_argument("--device", default=None, help="torch device (default: the model's preferred; cpu for SevenNet)")
    curves.add_argument("-o", "--output", default=None, help="plot to FILE.png or FILE.pdf (default: no plot)")
    curves.add_argument(
        "--lammps-table", default=None, metavar="FILE",
        help="write the first model's dimer eps_2(r) as a LAMMPS pair_style table file (default: none)",
    )
    curves.add_argument("--overwrite", action="store_true", help="replace existing output files")
    curves.set_defaults(run=_cmd_curves)


def _check_outputs(args) -> None:
    if args.output:
        check_figure_output(Path(args.output), args.overwrite)
    if args.lammps_table:
        table = Path(args.lammps_table)
        if args.kind == "trimer":
            raise CommandError("--lammps-table writes a dimer's eps_2(r): use --kind dimer or both")
        if table.exists() and not args.overwrite:
            raise CommandError(f"'{table}' exists: pass --overwrite to replace it")
        if not table.parent.exists():
            raise CommandError(f"folder '{table.parent}' for the LAMMPS table does not exist")


def _pair_and_triple(args) -> tuple[list[str], list[str]]:
    """The dimer's two and the trimer's three species of --species."""
    import ase.data

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
    return pair, triple


def _distances(args, reference):
    """The distances of the curves: a reference curve's own points, or --min..--max."""
    import numpy as np

    if args.points is not None and args.points < 2:
        raise CommandError(f"--points must be at least 2, got {args.points}")
    if reference is not None and args.min is None and args.max is None:
        if args.points is not None:
            raise CommandError(
                f"--points sets the points between --min and --max; the reference curve brings its own "
                f"{len(reference.distance)}: give --min and --max too, or leave --points out"
            )
        return reference.distance  # the models at the reference's own points
    default_low, default_high, default_points = _DEFAULT_RANGE
    low = default_low if args.min is None else args.min
    high = default_high if args.max is None else args.max
    if not 0 < low < high:
        got = [f"{option} {value:g}" + (" (its default)" if given is None else "")
               for option, value, given in (("--min", low, args.min), ("--max", high, args.max))]
        raise CommandError(f"need 0 < --min < --max (A), got {', '.join(got)}")
    return np.linspace(low, high, default_points if args.points is None else args.points)


def _loaded_models(models, device, wanted: dict) -> list:
    """(name, backend) of every model, its species checked for every curve (cheap,
    before any curve is computed). ``wanted``: species by kind."""
    import ase.data
    import numpy as np

    from ..backends.select import make_backend

    backends = []
    for model in models:
        try:
            backend = make_backend(model, device)
            for species in wanted.values():
                backend.check_species(np.array([ase.data.atomic_numbers[s] for s in species]))
        except ValueError as error:
            raise CommandError(f"--model {model}: {error}") from None
        backends.append((model, backend))
    return backends


def _reference_curves(args, calculator, wanted: dict, distances) -> list:
    """The reference calculator's curves, computed first: one that fails should fail
    before the models' work."""
    from ..analysis import dimer_curve, trimer_curve

    curves = []
    label = f"{args.reference} (reference)"
    for kind, species in wanted.items():
        try:
            if kind == "dimer":  # no forces: the LAMMPS table is a model's
                curve = dimer_curve(calculator, species, distances, label=label, forces=False)
            else:
                curve = trimer_curve(calculator, species, distances, label=label)
        except Exception as error:
            raise CommandError(
                f"--reference {args.reference} failed on the {'-'.join(species)} {kind} between "
                f"{distances[0]:g} and {distances[-1]:g} A: {type(error).__name__}: {error}"
            ) from None
        curve.reference = True
        curves.append(curve)
    return curves


def _cmd_curves(args) -> int:
    from ..analysis import curves_csv, dimer_curve, plot_curves, trimer_curve, write_lammps_table

    models = args.model or ["default"]
    for model in models:
        check_model(model)
    # everything that can be refused is refused before any model runs
    _check_outputs(args)
    pair, triple = _pair_and_triple(args)
    kinds = ("dimer", "trimer") if args.kind == "both" else (args.kind,)
    wanted = {kind: pair if kind == "dimer" else triple for kind in kinds}
    reference, reference_calculator = _curves_reference(args, pair)
    distances = _distances(args, reference)
    backends = _loaded_models(models, args.device, wanted)

    curves = [] if reference_calculator is None else _reference_curves(args, reference_calculator, wanted, distances)
    model_curves = []
    for model, backend in backends:
        if "dimer" in kinds:
            model_curves.append(dimer_curve(backend, pair, distances, label=model))
        if "trimer" in kinds:
            model_curves.append(trimer_curve(backend, triple, distances, label=model))
    curves = model_curves + curves

    print(curves_csv(curves, distances, reference), end="")
    if args.output:
        Path(args.output).unlink(missing_ok=True)
        plot_curves(curves + ([reference] if reference is not None else []), args.output)
        print(f"plot written to '{args.output}'", file=sys.stderr)
    if args.lammps_table:
        first = model_curves[0]  # a dimer: --kind dimer or both
        Path(args.lammps_table).unlink(missing_ok=True)
        with warnings_to_stderr(args.command):
            write_lammps_table(first, args.lammps_table)
        print(f"LAMMPS table of {first.label} written to '{args.lammps_table}'", file=sys.stderr)
    return 0


def _curves_reference(args, pair):
    """--reference of curves: (a reference dimer curve, None) for 'pbe' or a JSON
    file; (None, an ASE calculator) for 'fci', MODULE:NAME or FILE.py:NAME; (None,
    None) without one."""
    from ..analysis import REFERENCES, reference_curve
    from .common import reference_calculator

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
    return None, reference_calculator(text, choices)
