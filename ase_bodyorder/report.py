"""Summaries and plots of a many-body log."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import numpy as np

from .errors import InputError
from .h5md import LogData, chemical_formula, read_log

__all__ = ["bead_average", "energy_drift", "summarise", "plot_log"]


def bead_average(values: np.ndarray) -> np.ndarray:
    """Per-order series of a log, (frames, K): i-PI path-integral logs keep a bead
    dimension (frames, beads, K), averaged here like i-PI's potential."""
    values = np.asarray(values)
    return values.mean(axis=1) if values.ndim == 3 else values


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
    data = read_log(path)
    meta = data.metadata
    formula = chemical_formula(data.numbers)
    lines = [f"log:        {path}"]
    lines.append(f"system:     {formula} ({len(data.numbers)} atoms), periodic {data.pbc.tolist()}")
    if len(data.step):
        lines.append(
            f"frames:     {len(data.step)} (steps {data.step[0]}..{data.step[-1]}, "
            f"t = {data.time[0]:.2f}..{data.time[-1]:.2f} fs)"
        )
    else:
        lines.append("frames:     0")
    shown = {("cutoff", -1.0): "all (every subset)", ("max_order", -1): "none (the plain model)"}
    for key in ("model", "model_sha256", "dtype", "max_order", "cutoff", "ensemble", "temperature_K", "timestep_fs", "package_version"):
        if key in meta:
            lines.append(f"{key + ':':<17}{shown.get((key, meta[key]), meta[key])}")
    # what a backend adds to say which model exactly (its file, its package's version)
    for key in sorted(k for k in meta if k == "model_file" or (k.endswith("_version") and k != "package_version")):
        if meta[key] not in ("", None):
            lines.append(f"{key + ':':<17}{meta[key]}")
    obs = data.observables
    if "body_order_energies" in obs and len(obs["body_order_energies"]["value"]):
        dE = bead_average(obs["body_order_energies"]["value"])
        counts = bead_average(obs["subcluster_counts"]["value"])
        beads = obs["body_order_energies"]["value"].shape[1] if obs["body_order_energies"]["value"].ndim == 3 else 1
        if beads > 1:
            lines.append(f"beads:      {beads} (body-order statistics of the bead average)")
        lines.append("body order   mean dE_k (eV)     std (eV)    mean subclusters")
        for k in range(dE.shape[1]):
            lines.append(f"  {k + 1:>2}       {dE[:, k].mean():>14.6f} {dE[:, k].std():>12.6f}   {counts[:, k].mean():>12.1f}")
    if "temperature" in obs and len(obs["temperature"]["value"]):
        lines.append(f"temperature: mean {obs['temperature']['value'].mean():.1f} K")
    drift = energy_drift(data)
    ensemble = meta.get("ensemble")
    if drift is not None:
        # the total energy is conserved only without a thermostat
        if ensemble == "nve":
            lines.append(f"total-energy drift: {drift:.3e} eV/atom/ps")
        elif ensemble is None:
            lines.append(f"total-energy drift: {drift:.3e} eV/atom/ps (ensemble not recorded; meaningful for NVE only)")
        else:
            lines.append(f"total-energy drift: not reported, not meaningful under the {ensemble} thermostat")
    remainder = _remainders(data)
    if remainder:
        lines.append(f"plain model - E^(K): mean {np.mean(remainder):.6f} eV over {len(remainder)} frames")
    commands = meta.get("command_lines")
    if not isinstance(commands, list):
        commands = [meta["command_line"]] if isinstance(meta.get("command_line"), list) else []
    for i, command in enumerate(commands):
        label = "command:" if len(commands) == 1 else f"run {i + 1}:"
        text = shlex.join(str(c) for c in command) if isinstance(command, list) else str(command)
        lines.append(f"{label:<17}{text}")
    return "\n".join(lines)


def plot_log(path: str | os.PathLike, output: str | os.PathLike) -> Path:
    """A report of a log, written as PNG or PDF by suffix.

    One row per body order k: the fluctuation of dE_k about its mean (meV/atom) over
    time, with its histogram beside it (the means, which can differ by orders of
    magnitude between orders, are written in each panel); dE_1 only where it varies
    (fragments as bodies). Below: the size of each order (|mean dE_k| and its std,
    log scale) against k, and the energy conservation (NVE) or the thermostat's
    temperature.

    Uses matplotlib's object-oriented API only: no backend is selected and no pyplot
    state is touched (a notebook's backend stays as it is).
    """
    from matplotlib.figure import Figure

    path = Path(path)
    data = read_log(path)
    obs = data.observables
    if "body_order_energies" not in obs:
        raise InputError(f"'{path}' has no body_order_energies: not a truncated-model log")
    dE = bead_average(obs["body_order_energies"]["value"])
    if len(dE) == 0:
        raise InputError(f"'{path}' holds no frame yet: nothing to plot")
    time_ps = obs["body_order_energies"]["time"] / 1000.0
    order = dE.shape[1]
    n_atoms = len(data.numbers)
    ensemble = str(data.metadata.get("ensemble", "nve"))
    # dE_1 is a constant (the isolated atoms) when atoms are the bodies
    varies = np.ptp(dE, axis=0) > 1e-9 * np.maximum(1.0, np.abs(dE).max(axis=0))
    shown = [k for k in range(order) if k > 0 or varies[0]]

    fig = Figure(figsize=(11, 1.6 * len(shown) + 4.2), layout="constrained")
    formula = chemical_formula(data.numbers)
    fig.suptitle(f"{path.name}: {formula}, K = {order}, {ensemble}, {len(dE)} frames")
    if shown:
        top, bottom = fig.subfigures(2, 1, height_ratios=[1.6 * len(shown), 3.8])
        _draw_fluctuations(top, time_ps, dE[:, shown] / n_atoms, [k + 1 for k in shown])
    else:
        bottom = fig
    left, right = bottom.subplots(1, 2)

    # sizes on a log scale: dE_2 (eV/atom) and dE_6 (sub-meV) are both readable
    ks = np.arange(1, order + 1)
    size = np.abs(dE.mean(axis=0)) / n_atoms
    spread = np.where(varies, dE.std(axis=0), 0.0) / n_atoms
    series = ((size, "|mean $\\Delta E_k$|", "o"), (spread, "std $\\Delta E_k$ (fluctuation)", "s"))
    for values, label, marker in series:
        keep = values > 0
        left.plot(ks[keep], values[keep], marker=marker, label=label)
    remainder = _remainders(data)
    if remainder and np.mean(remainder) != 0:
        left.axhline(abs(np.mean(remainder)) / n_atoms, color="k", ls="--", label="|plain model - $E^{(K)}$|")
    left.set_yscale("log")
    left.set_xticks(ks)
    left.set_xlabel("body order k")
    left.set_ylabel("eV/atom")
    left.set_title("size of each body order")
    left.legend(fontsize=8)

    _draw_energy_or_temperature(right, data, ensemble)

    output = Path(output)
    fig.savefig(output)
    return output


def _draw_fluctuations(figure, time_ps, per_atom: np.ndarray, orders: list[int]) -> None:
    """One row per order: dE_k - mean (meV/atom) over time, and its histogram."""
    axes = figure.subplots(
        len(orders), 2, sharex="col", sharey="row", squeeze=False, gridspec_kw={"width_ratios": [4, 1]}
    )
    bins = int(np.clip(np.sqrt(len(per_atom)), 5, 50))
    for row, k in enumerate(orders):
        values = per_atom[:, row]
        mean = float(values.mean())
        fluctuation = (values - mean) * 1000.0
        ax, hist = axes[row]
        ax.plot(time_ps, fluctuation, color=f"C{row}", lw=0.9)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(f"$\\Delta E_{{{k}}}$ - mean\n(meV/atom)")
        ax.text(
            0.01,
            0.95,
            f"$\\Delta E_{{{k}}}$: mean {_number(mean)} eV/atom, std {fluctuation.std():.3g} meV/atom",
            transform=ax.transAxes, va="top", fontsize=8, bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
        )
        hist.hist(fluctuation, bins=bins, orientation="horizontal", color=f"C{row}", alpha=0.8)
        hist.tick_params(labelleft=False)
    axes[-1, 0].set_xlabel("time (ps)")
    axes[-1, 1].set_xlabel("frames")
    axes[0, 0].set_title("body-order contributions: fluctuation about the mean, per atom")
    axes[0, 1].set_title("distribution")


def _draw_energy_or_temperature(ax, data: LogData, ensemble: str) -> None:
    """NVE: the total energy's change (meV/atom); a thermostat: the temperature."""
    obs = data.observables
    n_atoms = len(data.numbers)
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


def _number(value: float) -> str:
    """Four decimals, or three significant digits for what they would show as 0."""
    return f"{value:.4f}" if abs(value) >= 0.01 or value == 0 else f"{value:.3g}"


def _remainders(data: LogData) -> list[float]:
    """The plain model's energy minus E^(K) at every step where both were logged (eV)."""
    obs = data.observables
    if "full_model_energy" not in obs or "potential_energy" not in obs:
        return []
    full = obs["full_model_energy"]
    truncated = dict(zip(obs["potential_energy"]["step"].tolist(), obs["potential_energy"]["value"].tolist()))
    return [f - truncated[s] for s, f in zip(full["step"].tolist(), full["value"].tolist())
            if s in truncated and np.isfinite(f)]
