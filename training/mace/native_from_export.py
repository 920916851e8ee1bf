"""Rebuild the shipped mace-h-fci as a native mace-torch model file (``.model``).

The shipped ``ase_bodyorder/models/mace-h-fci.pt`` is a metatomic TorchScript export of a
metatrain ``experimental.mace`` model. Inside it are a mace-torch ``MACE`` module
(``module.mace_model``, its own atomic energies zero), metatrain's composition model (an
energy per species) and its scaler (one energy scale). metatrain's energy is

    E = scale * (sum over atoms of the MACE node energies) + sum over atoms of E0(species)

which is exactly mace-torch's ``ScaleShiftMACE`` with ``atomic_energies`` = E0,
``atomic_inter_scale`` = scale and ``atomic_inter_shift`` = 0. This script builds that
module with the hypers of options.yaml (training/mace/README), copies every parameter and
buffer of ``module.mace_model`` into it by name (all names and shapes must match, none
may be left over), checks it against the export on a few random hydrogen clusters, and
saves it with ``torch.save`` as mace-torch's own training does.

The export's constants (Clebsch-Gordan coefficients, the product basis' U matrices, the
Bessel prefactor) were computed in float32 and then cast; they are copied as they are,
so the native model computes what the export computes. metatrain hands MACE the axes in
the order (y, z, x): in that frame the two agree to round-off (1e-14 eV measured); in the lab
frame they differ by the export's own lack of rotation invariance, about 1e-8 eV.

Run in the MACE environment (mace-torch and this package installed, training/mace/README):

    python training/mace/native_from_export.py OUT.model [--export mace-h-fci.pt]

tests/test_mace_backend.py imports :func:`native_from_export` to make its fixture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

DEFAULT_EXPORT = Path(__file__).resolve().parents[2] / "ase_bodyorder" / "models" / "mace-h-fci.pt"

#: the architecture of options.yaml (metatrain's defaults for what it does not set:
#: residual interaction blocks for both layers, 5th-order polynomial cutoff, silu gate)
HYPERS = {
    "r_max": 4.0,
    "num_bessel": 8,
    "num_polynomial_cutoff": 5,
    "max_ell": 2,
    "num_interactions": 2,
    "hidden_irreps": "16x0e + 16x1o",
    "MLP_irreps": "16x0e",
    "correlation": 3,
    "radial_MLP": [16, 16, 16],
    "avg_num_neighbors": 4.0,
}

_PREFIX = "module.mace_model."


def _export_parts(export: Path):
    """The export's MACE tensors by name, its per-species energies and its scale."""
    import metatensor.torch as mts
    import metatomic.torch  # noqa: F401 (the TorchScript classes the archive uses)
    import torch

    archive = torch.jit.load(str(export), map_location="cpu")
    module = archive.module
    tensors = dict(archive.named_parameters())
    tensors.update(dict(archive.named_buffers()))
    mace_tensors = {name[len(_PREFIX):]: value for name, value in tensors.items() if name.startswith(_PREFIX)}

    additive = list(module.additive_models.children())
    if len(additive) != 1:
        raise ValueError(f"expected one additive model (the composition), found {len(additive)}")
    composition = mts.load_buffer(additive[0].energy_composition_buffer).block(0)
    species = composition.samples.column("center_type").tolist()
    energies = composition.values[:, 0].to(torch.float64)

    scales = mts.load_buffer(module.scaler.energy_scaler_buffer).block(0)
    if scales.samples.column("atomic_type").tolist() != [-1]:  # -1: one scale for every species
        raise ValueError("the export's energy scale depends on the species: not one ScaleShiftMACE scale")
    scale = float(scales.values.reshape(-1)[0])
    return mace_tensors, species, energies, scale


def native_from_export(export: str | Path = DEFAULT_EXPORT):
    """The mace-torch ``ScaleShiftMACE`` (float64, cpu) equal to the metatomic export."""
    import mace  # noqa: F401 (first: it lets e3nn 0.4.4 load its constants under torch >= 2.6)
    import torch
    from e3nn import o3
    from mace import modules

    tensors, species, energies, scale = _export_parts(Path(export))
    if tensors["atomic_numbers"].tolist() != species:
        raise ValueError(f"species of the MACE model {tensors['atomic_numbers'].tolist()} and of the composition "
                         f"model {species} differ")
    if torch.any(tensors["atomic_energies_fn.atomic_energies"] != 0):
        raise ValueError("the export's MACE module has atomic energies of its own: not a metatrain layout")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn fixes some constants' dtype at construction
    try:
        residual = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
        model = modules.ScaleShiftMACE(
            r_max=HYPERS["r_max"], num_bessel=HYPERS["num_bessel"],
            num_polynomial_cutoff=HYPERS["num_polynomial_cutoff"], max_ell=HYPERS["max_ell"],
            interaction_cls=residual, interaction_cls_first=residual,
            num_interactions=HYPERS["num_interactions"], num_elements=len(species),
            hidden_irreps=o3.Irreps(HYPERS["hidden_irreps"]), MLP_irreps=o3.Irreps(HYPERS["MLP_irreps"]),
            atomic_energies=energies.numpy(), avg_num_neighbors=HYPERS["avg_num_neighbors"],
            atomic_numbers=species, correlation=HYPERS["correlation"], gate=torch.nn.functional.silu,
            radial_MLP=HYPERS["radial_MLP"], atomic_inter_scale=scale, atomic_inter_shift=0.0,
        )
    finally:
        torch.set_default_dtype(previous)
    state = model.state_dict()
    own = {"scale_shift.scale", "scale_shift.shift", "atomic_energies_fn.atomic_energies"}
    missing = sorted(set(state) - set(tensors) - own)
    extra = sorted(set(tensors) - set(state))
    if missing or extra:
        raise ValueError(f"the export does not match these hypers: missing {missing}, left over {extra}")
    for name, value in tensors.items():
        if name in own:
            continue
        if state[name].shape != value.shape:
            raise ValueError(f"{name}: shape {tuple(value.shape)} in the export, {tuple(state[name].shape)} here")
        state[name] = value.detach().clone()
    model.load_state_dict(state, strict=True)
    for value in [*model.parameters(), *model.buffers()]:
        if value.is_floating_point() and value.dtype != torch.float64:
            raise ValueError("the rebuilt model is not float64 throughout")
    return model.eval()


def largest_differences(model, export: str | Path = DEFAULT_EXPORT, n_clusters: int = 4) -> tuple[float, float]:
    """Largest |E_native - E_export| (eV) over random hydrogen clusters of 3-8 atoms:
    with the native model given the export's frame (metatrain hands MACE the axes as
    (y, z, x)), and in the lab frame. The second is larger: the export's Clebsch-Gordan
    and product-basis constants were computed in float32 before the cast to float64, so
    it is rotation invariant only to about 1e-8 eV; the native model keeps them."""
    import ase
    from mace.calculators import MACECalculator

    from ase_bodyorder.backends.metatomic import MetatomicBackend

    native = MACECalculator(models=model, device="cpu", default_dtype="float64")
    exported = MetatomicBackend(str(export), device="cpu")
    rng = np.random.default_rng(0)
    frame = lab = 0.0
    for n in range(3, 3 + n_clusters):
        atoms = ase.Atoms(f"H{n}", positions=rng.uniform(0, 2.5, (n, 3)))
        reference = exported.evaluate_full(atoms, False, False)["energy"]
        for positions in (atoms.positions[:, [1, 2, 0]], atoms.positions):
            moved = ase.Atoms(atoms.numbers, positions=positions)
            moved.calc = native
            difference = abs(moved.get_potential_energy() - reference)
            if positions is atoms.positions:
                lab = max(lab, difference)
            else:
                frame = max(frame, difference)
    return frame, lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the native model file to write (.model)")
    parser.add_argument("--export", default=str(DEFAULT_EXPORT), help="the metatomic export (default: %(default)s)")
    args = parser.parse_args()
    import torch

    model = native_from_export(args.export)
    frame, lab = largest_differences(model, args.export)
    if frame > 1e-10:
        raise SystemExit(f"the rebuilt model differs from the export by {frame:.2e} eV: not written")
    torch.save(model, args.out)
    print(f"wrote {args.out}; largest energy difference from the export {frame:.1e} eV in the export's "
          f"(y, z, x) frame, {lab:.1e} eV in the lab frame (the export's float32 constants)")


if __name__ == "__main__":
    main()
