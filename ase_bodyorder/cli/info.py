"""``ase-bodyorder models``, ``info`` and ``report``: what is installed, what a log holds
(text and plots), and what a model file holds."""

from __future__ import annotations

from pathlib import Path

from .common import CommandError


def register_logs(subparsers) -> None:
    """Add the ``info`` and ``report`` commands."""
    info = subparsers.add_parser("info", help="text summary of a log, or what a model file (.pt) holds")
    info.add_argument(
        "log", metavar="FILE",
        help="H5MD log written by 'ase-bodyorder md' (or 'ipi run'), or a metatomic .pt model file "
        "(its name, and K, cutoff and outputs of a file written by 'ase-bodyorder export')",
    )
    info.set_defaults(run=_cmd_info)

    report = subparsers.add_parser("report", help="plots of a log (PNG or PDF)")
    report.add_argument("log", help="H5MD log written by 'ase-bodyorder md' (or 'ipi run')")
    report.add_argument(
        "-o", "--output", default=None, help="FILE.png or FILE.pdf (default: the log's name with .png, next to it)"
    )
    report.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    report.set_defaults(run=_cmd_report)


def register_models(subparsers) -> None:
    """Add the ``models`` command."""
    models = subparsers.add_parser("models", help="list the shipped models")
    models.set_defaults(run=_cmd_models)


def _cmd_info(args) -> int:
    if not Path(args.log).is_file():
        raise CommandError(f"'{args.log}' is not a file: give an H5MD log or a .pt model file")
    if Path(args.log).suffix == ".pt":
        from ..export import describe_model_file

        print(describe_model_file(args.log))
        return 0
    from ..report import summarise

    print(summarise(args.log))
    return 0


def _cmd_report(args) -> int:
    from ..report import plot_log

    output = Path(args.output) if args.output else Path(args.log).with_suffix(".png")
    if output.exists() and not args.overwrite:
        raise CommandError(f"'{output}' exists: pass --overwrite to replace it")
    plot_log(args.log, output)
    print(f"report written to '{output}'")
    return 0


def _cmd_models(args) -> int:
    from ..models import DEFAULT_MODEL, list_models, model_card, resolve_model

    for name in list_models():
        card = model_card(name)
        mark = " (default)" if name == DEFAULT_MODEL else ""
        print(f"{name}{mark}: {card.get('summary', '')}")
        print(f"    {resolve_model(name)}")
    _print_sevennet_models()
    _print_chgnet_models()
    return 0


def _print_chgnet_models() -> None:
    """The pretrained CHGNet models the installed chgnet wheel holds (docs/universal.md)."""
    from importlib.metadata import version

    from ..backends.chgnet import PRETRAINED, installed_pretrained

    found = installed_pretrained()
    if found is None:
        print(f"CHGNet models ({', '.join(PRETRAINED)}): not installed; pip install \"ase-bodyorder[chgnet]\"")
        return
    for name in PRETRAINED:
        also = " (also chgnet)" if name == "chgnet-0.3.0" else ""
        data = "r2SCAN (MP-r2SCAN)" if "r2scan" in name else "PBE/PBE+U (MPtrj)"
        print(f"{name}{also}: CHGNet pretrained (chgnet {version('chgnet')}), universal, {data}; "
              "float64 by default, --dtype float32 for its own precision")
        print(f"    {found.get(name, 'not in this chgnet wheel')}")


def _print_sevennet_models() -> None:
    """The pretrained SevenNet models the installed sevenn wheel holds (docs/universal.md)."""
    from importlib.metadata import version

    from ..backends.sevennet import _ALIASES, PRETRAINED, installed_pretrained

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


