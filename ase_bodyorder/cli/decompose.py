"""``ase-bodyorder decompose``: every body order's contribution, structure by structure."""

from __future__ import annotations

import json

from .common import add_dask_options, add_model_options, dask_client, frames_of, make_calculator


def register(subparsers) -> None:
    """Add the ``decompose`` command."""
    dec = subparsers.add_parser("decompose", help="per-structure body-order contributions")
    dec.add_argument(
        "structures", nargs="+",
        help="structure files or ase-bodyorder logs (H5MD); every frame is decomposed, in order",
    )
    add_model_options(dec)
    dec.add_argument(
        "--format", choices=["table", "csv", "json"], default="table",
        help="output format; energies in eV (default %(default)s)",
    )
    dec.add_argument("--full-model", action="store_true", help="also evaluate the plain model and the remainder")
    dec.add_argument("--quiet", action="store_true", help="no progress bar (shown for several structures)")
    add_dask_options(dec)
    dec.set_defaults(run=_cmd_decompose)


def _cmd_decompose(args) -> int:
    from ..distributed import decompose_frames

    names, frames = [], []
    for path in args.structures:
        these = frames_of(path)
        names += [path] if len(these) == 1 else [f"{path}@{f}" for f in range(len(these))]
        frames += these
    with dask_client(args) as client:
        # with --fragments molecules, the molecules of the first frame (as md finds them)
        calculator = make_calculator(args, frames[0], client, structures=frames)
        rows = _DecompositionWriter(args.format, calculator.max_order, args.full_model, max(map(len, names)))
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
        self.header = header

    def _start(self) -> None:
        """The header, with the first row: a run refused at its first structure leaves
        nothing on stdout (no partial file)."""
        if self.fmt == "json":
            print("[", flush=True)
        elif self.fmt == "csv":
            print(",".join(self.header), flush=True)
        else:
            print("  ".join(h.rjust(w) for h, w in zip(self.header, self.widths)), flush=True)

    def write(self, name: str, n_atoms: int, r) -> None:
        if self.count == 0:
            self._start()
        if self.fmt == "json":
            record = json.dumps({"structure": name, "n_atoms": n_atoms, **r.as_dict(), "per_atom_body_order_energies": None}, indent=1)
            print(("," if self.count else "") + record, flush=True)
        else:
            line = [name, str(n_atoms)] + [f"{e:.6f}" for e in r.body_order_energies]
            line += [f"{r.truncated_energies[-1]:.6f}"] + [str(c) for c in r.subcluster_counts]
            if self.full:
                line += [f"{r.full_energy:.6f}", f"{r.remainder:.6f}"]
            if self.fmt == "csv":
                print(",".join(line), flush=True)
            else:
                print("  ".join(v.rjust(w) for v, w in zip(line, self.widths)), flush=True)
        self.count += 1

    def close(self) -> None:
        if self.count == 0:
            self._start()
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

