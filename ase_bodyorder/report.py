"""Summaries and plots of a many-body log."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .h5md import LogData, read_log

__all__ = ["energy_drift", "summarise", "plot_log"]


def energy_drift(data: LogData) -> float | None:
    """Slope of the total energy in eV/atom/ps (a linear fit), or None if not logged."""
    if "total_energy" not in data.observables:
        return None
    series = data.observables["total_energy"]
    if len(series["time"]) < 2:
        return None
    slope = np.polyfit(series["time"] / 1000.0, series["value"], 1)[0]
    return float(slope) / len(data.numbers)


def summarise(path: str | os.PathLike) -> str:
    """A text summary of a log: system, run, model, and the body-order statistics."""
    import ase

    data = read_log(path)
    meta = data.metadata
    formula = ase.Atoms(numbers=data.numbers).get_chemical_formula()
    lines = [f"log:        {path}"]
    lines.append(f"system:     {formula} ({len(data.numbers)} atoms), periodic {data.pbc.tolist()}")
    if len(data.step):
        lines.append(
            f"frames:     {len(data.step)} (steps {data.step[0]}..{data.step[-1]}, "
            f"t = {data.time[0]:.2f}..{data.time[-1]:.2f} fs)"
        )
    else:
        lines.append("frames:     0")
    for key in ("model", "model_sha256", "dtype", "max_order", "cutoff", "ensemble", "temperature_K", "timestep_fs", "package_version"):
        if key in meta:
            lines.append(f"{key + ':':<16}{meta[key]}")
    obs = data.observables
    if "body_order_energies" in obs and len(obs["body_order_energies"]["value"]):
        dE = obs["body_order_energies"]["value"]
        counts = obs["subcluster_counts"]["value"]
        lines.append("body order   mean dE_k (eV)     std (eV)    mean subclusters")
        for k in range(dE.shape[1]):
            lines.append(f"  {k + 1:>2}       {dE[:, k].mean():>14.6f} {dE[:, k].std():>12.6f}   {counts[:, k].mean():>12.1f}")
    if "temperature" in obs and len(obs["temperature"]["value"]):
        lines.append(f"temperature: mean {obs['temperature']['value'].mean():.1f} K")
    drift = energy_drift(data)
    if drift is not None:
        lines.append(f"total-energy drift: {drift:.3e} eV/atom/ps")
    if "full_model_energy" in obs and "potential_energy" in obs:
        full = obs["full_model_energy"]
        truncated = dict(zip(obs["potential_energy"]["step"].tolist(), obs["potential_energy"]["value"].tolist()))
        remainder = [
            f - truncated[s]
            for s, f in zip(full["step"].tolist(), full["value"].tolist())
            if s in truncated and np.isfinite(f)
        ]
        if remainder:
            lines.append(f"plain model - E^(K): mean {np.mean(remainder):.6f} eV over {len(remainder)} frames")
    return "\n".join(lines)


def plot_log(path: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Four panels: dE_k over time, E^(k) against k, energy conservation or thermostat
    behaviour, and the distributions of dE_k. Written as PNG or PDF by suffix."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_log(path)
    obs = data.observables
    if "body_order_energies" not in obs:
        raise ValueError(f"'{path}' has no body_order_energies: not a truncated-model log")
    dE = obs["body_order_energies"]["value"]
    time_ps = obs["body_order_energies"]["time"] / 1000.0
    order = dE.shape[1]
    n_atoms = len(data.numbers)
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)

    ax = axes[0, 0]
    for k in range(1, order):
        ax.plot(time_ps, dE[:, k] / n_atoms, label=f"$\\Delta E_{k + 1}$")
    ax.set_xlabel("time (ps)")
    ax.set_ylabel("contribution (eV/atom)")
    ax.set_title(f"body-order contributions (dE_1 = {dE[0, 0] / n_atoms:.3f} eV/atom, constant)")
    ax.legend()

    ax = axes[0, 1]
    truncated = obs["truncated_energies"]["value"] / n_atoms
    ks = np.arange(1, order + 1)
    ax.errorbar(ks, truncated.mean(axis=0), yerr=truncated.std(axis=0), marker="o", capsize=3, label="$E^{(k)}$")
    if "full_model_energy" in obs and len(obs["full_model_energy"]["value"]):
        ax.axhline(np.nanmean(obs["full_model_energy"]["value"]) / n_atoms, color="k", ls="--", label="plain model")
    ax.set_xticks(ks)
    ax.set_xlabel("body order k")
    ax.set_ylabel("$E^{(k)}$ (eV/atom), mean $\\pm$ std")
    ax.set_title("convergence with body order")
    ax.legend()

    ax = axes[1, 0]
    ensemble = str(data.metadata.get("ensemble", "nve"))
    if ensemble == "nve" and "total_energy" in obs:
        total = obs["total_energy"]
        ax.plot(total["time"] / 1000.0, (total["value"] - total["value"][0]) / n_atoms * 1000)
        ax.set_ylabel("$E_{tot} - E_{tot}(0)$ (meV/atom)")
        drift = energy_drift(data)
        ax.set_title(f"energy conservation (drift {drift:.2e} eV/atom/ps)" if drift is not None else "energy")
    elif "temperature" in obs:
        temperature = obs["temperature"]
        ax.plot(temperature["time"] / 1000.0, temperature["value"])
        target = data.metadata.get("temperature_K")
        if target:
            ax.axhline(float(target), color="k", ls="--", label="target")
            ax.legend()
        ax.set_ylabel("temperature (K)")
        ax.set_title(f"thermostat ({ensemble})")
    ax.set_xlabel("time (ps)")

    ax = axes[1, 1]
    for k in range(1, order):
        ax.hist(dE[:, k] / n_atoms, bins=30, alpha=0.6, label=f"$\\Delta E_{k + 1}$")
    ax.set_xlabel("contribution (eV/atom)")
    ax.set_ylabel("frames")
    ax.set_title("distributions")
    if order > 1:
        ax.legend()

    output = Path(output)
    fig.savefig(output)
    plt.close(fig)
    return output
