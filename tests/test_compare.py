"""ase_bodyorder.compare and `ase-bodyorder compare`: model and reference expansions
against the definition (inclusion-exclusion over all subsets), the cache, the FCI
calculator against the shipped FCI energies, bad input."""

from __future__ import annotations

import itertools
import json

import ase
import ase.io
import numpy as np
import pytest
from ase.calculators.lj import LennardJones

from ase_bodyorder.cli import main
from ase_bodyorder.compare import (
    ReferenceFailed,
    compare_expansions,
    model_expansions,
    reference_expansions,
    shipped_clusters,
)
from conftest import inclusion_exclusion, lines_by_label, random_cluster


def _lj():
    return LennardJones(sigma=1.0, epsilon=0.05, rc=3.0, smooth=True)


def _clusters():
    out = []
    for seed, density in ((1, "low"), (2, "high"), (3, "high")):
        atoms = random_cluster(5, 0.05 if density == "low" else 0.12, seed, species=[1])
        atoms.info["density"] = density
        out.append(atoms)
    return out


def _definition(calculator, atoms: ase.Atoms) -> np.ndarray:
    """dE_1..dE_n straight from the definition: eps of every subset, summed per size."""
    energies = {}
    for k in range(1, len(atoms) + 1):
        for subset in itertools.combinations(range(len(atoms)), k):
            part = atoms[list(subset)]
            part.calc = calculator
            energies[subset] = part.get_potential_energy()
    cumulative = [inclusion_exclusion(energies, k) for k in range(1, len(atoms) + 1)]
    return np.diff([0.0, *cumulative])


class Counting(LennardJones):
    calls = 0

    def calculate(self, *args, **kwargs):
        Counting.calls += 1
        super().calculate(*args, **kwargs)


def test_reference_and_model_expansions_follow_the_definition(tmp_path, exported_models):
    from ase_bodyorder.reference import ReferencePotential  # noqa: F401 (the model's potential)

    clusters = _clusters()
    reference = reference_expansions(clusters, _lj(), cache=tmp_path)
    for atoms, values in zip(clusters, reference):
        np.testing.assert_allclose(values, _definition(_lj(), atoms), rtol=0, atol=1e-12)
    # a model (a metatomic export), packed, against the same definition through ASE
    from metatomic_ase import MetatomicCalculator

    models = model_expansions(clusters, exported_models["full"])
    for atoms, values in zip(clusters, models):
        np.testing.assert_allclose(values, _definition(MetatomicCalculator(exported_models["full"]), atoms),
                                   rtol=0, atol=1e-9)
    # with a cutoff: connected subsets only, the same on both sides
    cut = reference_expansions(clusters, _lj(), cutoff=3.0, cache=tmp_path)
    for a, b in zip(cut, reference):  # LJ with rc = 3 is local at 3 A: the same expansion
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_the_comparison_table(tmp_path, exported_models):
    clusters = _clusters()
    result = compare_expansions(clusters, [exported_models["full"], _lj()], _lj(), cache=tmp_path,
                                labels=["model", "lj"], max_order=4)
    assert result.groups == {"low": 1, "high": 2}
    rows = {(r["group"], r["model"], r["k"]): r for r in result.rows()}
    lj = rows[("high", "lj", 2)]
    assert lj["percent_of_reference"] == pytest.approx(100) and lj["sign_agrees"]
    assert lj["clusters_with_sign_agreeing"] == 2
    # the numbers are the mean per-atom dE_k of the group's clusters
    definition = np.mean([_definition(_lj(), a)[1] / len(a) for a in clusters[1:]]) * 1000
    assert lj["reference_meV_per_atom"] == pytest.approx(definition, abs=1e-9)
    # a pair potential has no three-body term: dE_3 is round-off, with no percentage
    three = rows[("high", "lj", 3)]
    assert abs(three["reference_meV_per_atom"]) < 1e-6 and three["percent_of_reference"] is None
    text = result.table()
    assert "high (2 clusters; every subset)" in text and "dE_4" in text and "(100%)" in text
    record = json.loads(result.to_json())
    assert record["rows"][0]["group"] == "low"
    np.testing.assert_allclose(record["per_cluster"]["high"]["lj"], result.models["lj"]["high"])
    figure = result.plot(tmp_path / "orders.png")
    assert (tmp_path / "orders.png").stat().st_size > 10_000
    # a panel per group; in each, the reference and the model as lines of |mean dE_k| against k
    assert [ax.get_title() for ax in figure.axes] == [f"{g} ({n} clusters)" for g, n in result.groups.items()]
    for ax, group in zip(figure.axes, result.groups):
        lines = lines_by_label(ax)
        assert set(lines) == {result.reference_name, "model", "lj"}
        ks, values = lines["lj"].get_data()
        assert list(ks) == list(range(2, result.max_order + 1))
        mean = np.abs(result.models["lj"][group].mean(axis=0)[1:])
        drawn = np.isfinite(values)
        np.testing.assert_allclose(values[drawn], mean[drawn])
        assert ax.get_xlabel() == "body order k" and ax.get_yscale() == "log"
    learning = result.plot(tmp_path / "learning.png", learning=True)
    assert all("% of" in ax.get_ylabel() for ax in learning.axes)
    assert {line.get_label() for line in learning.axes[0].get_lines()} >= {"dE_2"}


def test_reference_energies_are_cached_on_disk(tmp_path):
    clusters = _clusters()[:1]
    Counting.calls = 0
    first = reference_expansions(clusters, Counting(rc=3.0), cache=tmp_path)
    assert Counting.calls == 2 ** 5 - 1
    second = reference_expansions(clusters, Counting(rc=3.0), cache=tmp_path)
    assert Counting.calls == 2 ** 5 - 1  # nothing computed again
    np.testing.assert_array_equal(first[0], second[0])
    reference_expansions(clusters, Counting(rc=2.5), cache=tmp_path)  # another method
    assert Counting.calls == 2 * (2 ** 5 - 1)
    reference_expansions(clusters, Counting(rc=3.0), cache=None)
    assert Counting.calls == 3 * (2 ** 5 - 1)


def test_fci_calculator_gives_the_shipped_fci_energies():
    pytest.importorskip("pyscf")
    from ase_bodyorder.fci import FCICalculator

    cluster = shipped_clusters()[4]  # high density
    table = cluster.info["subcluster_energies"]
    for subset in ((0, 3), (1, 2, 5), (0, 2, 4, 6)):
        atoms = cluster[list(subset)]
        atoms.calc = FCICalculator()
        assert atoms.get_potential_energy() == pytest.approx(table[",".join(map(str, subset))], abs=1e-7)


def test_shipped_reference_equals_its_table():
    clusters = shipped_clusters()
    assert len(clusters) == 8 and {a.info["density"] for a in clusters} == {"low", "high"}
    values = reference_expansions(clusters[:1], "shipped", max_order=8)[0]
    table = clusters[0].info["subcluster_energies"]
    energies = {tuple(map(int, key.split(","))): value for key, value in table.items()}
    cumulative = [inclusion_exclusion(energies, k) for k in range(1, 9)]
    np.testing.assert_allclose(values, np.diff([0.0, *cumulative]), rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------------
# bad input


class FailsOnTriples(LennardJones):
    def calculate(self, atoms=None, *args, **kwargs):
        if len(atoms) == 3:
            raise RuntimeError("SCF did not converge")
        super().calculate(atoms, *args, **kwargs)


def test_a_failing_reference_is_named_with_its_subcluster(tmp_path):
    with pytest.raises(ReferenceFailed, match=r"failed on subcluster \[0, 1, 2\] of cluster 0 \(H3\): RuntimeError: SCF"):
        reference_expansions(_clusters()[:1], FailsOnTriples(rc=3.0), cache=tmp_path)


def test_too_many_bodies_for_every_subset_are_refused(tmp_path):
    big = random_cluster(13, 0.05, 4, species=[1])
    with pytest.raises(ValueError, match="13 bodies has 8191 subsets of at most 13 bodies"):
        reference_expansions([big], _lj(), cache=tmp_path)
    with pytest.raises(ValueError, match="13 bodies has 8191 subsets"):
        model_expansions([big], _lj())
    # a low order needs few subsets: allowed
    assert len(reference_expansions([big], _lj(), max_order=2, cache=tmp_path)[0]) == 2


def test_mixed_sizes_need_an_order_and_orders_start_at_two(tmp_path):
    clusters = _clusters()[:1] + [random_cluster(4, 0.05, 9, species=[1])]
    with pytest.raises(ValueError, match="4 to 5 bodies: give max_order"):
        compare_expansions(clusters, _lj(), _lj(), cache=tmp_path)
    assert compare_expansions(clusters, _lj(), _lj(), cache=tmp_path, max_order=3).max_order == 3
    with pytest.raises(ValueError, match="at least 2"):
        compare_expansions(clusters, _lj(), _lj(), cache=tmp_path, max_order=1)


def test_round_off_has_no_sign_and_a_zero_reference_no_percentage(tmp_path):
    """LJ with rc = 1.5 on sparse clusters: dE_k of high order are exactly 0 or
    round-off; no '!' and no percentage from them, and the JSON stays valid."""
    clusters = _clusters()[:1]
    result = compare_expansions(clusters, LennardJones(rc=1.5), LennardJones(rc=1.5), cache=tmp_path)
    rows = result.rows()
    assert all(r["sign_agrees"] for r in rows)
    zero = [r for r in rows if abs(r["reference_meV_per_atom"]) < 1e-6]
    assert zero and all(r["percent_of_reference"] is None for r in zero)
    json.loads(result.to_json())  # no NaN
    assert result.table().count("!") == len(result.groups)  # only in the headers: "! wrong sign"


def test_a_moved_shipped_cluster_is_refused():
    cluster = shipped_clusters()[0]
    cluster.positions[0] += [0.8, 0, 0]
    with pytest.raises(ValueError, match="not the geometry its shipped FCI energies belong to"):
        reference_expansions([cluster], "shipped", max_order=2)


def test_models_with_other_species_are_named(tmp_path):
    carbon = ase.Atoms("C3", positions=[[0, 0, 0], [1.3, 0, 0], [0, 1.3, 0]])
    with pytest.raises(ValueError, match=r"species \['C'\].*not known"):
        compare_expansions([carbon], "default", _lj(), cache=tmp_path)


# ----------------------------------------------------------------------------------
# the command


def test_compare_command_on_the_shipped_clusters(tmp_path, capsys, saved_figures):
    figure = tmp_path / "orders.png"
    assert main(["compare", "--model", "pet-h-fci", "-K", "4", "--format", "csv", "-o", str(figure)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("group,model,k,dE_meV_per_atom,reference_meV_per_atom,percent_of_reference")
    assert len(lines) == 1 + 2 * 3  # two densities, k = 2..4
    assert figure.stat().st_size > 10_000
    (drawn,) = saved_figures
    assert [ax.get_title() for ax in drawn.axes] == ["low (4 clusters)", "high (4 clusters)"]
    assert all(set(lines_by_label(ax)) == {"FCI/STO-3G", "pet-h-fci"} for ax in drawn.axes)
    assert main(["compare", "--model", "pet-h-fci", "-K", "3", "-o", str(figure)]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err


def test_compare_command_on_own_structures(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ASE_BODYORDER_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "clusters.extxyz"
    ase.io.write(path, _clusters())
    assert main(["compare", str(path), "--model", "default", "--reference", "ase.calculators.lj:LennardJones",
                 "--format", "json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["groups"] == {"low": 1, "high": 2} and record["models"] == ["pet-h-fci"]
    assert any((tmp_path / "cache").iterdir())
    assert main(["compare", str(path), "--reference", "shipped"]) == 2
    assert "covers only the shipped H8 clusters" in capsys.readouterr().err
    assert main(["compare", str(path), "--reference", "nowhere:Nothing"]) == 2
    assert "cannot import nowhere (No module named" in capsys.readouterr().err
    assert main(["compare", str(path), "--reference", "ase.calculators.mixing:SumCalculator"]) == 2
    assert "calling SumCalculator() without arguments failed" in capsys.readouterr().err
    assert main(["compare", str(path), "--reference", "os:getcwd"]) == 2
    assert "not an ASE calculator" in capsys.readouterr().err
    own = tmp_path / "myref.py"
    own.write_text("from ase.calculators.lj import LennardJones\n\ndef make():\n    return LennardJones(rc=2.0)\n")
    assert main(["compare", str(path), "--model", "default", "--reference", f"{own}:make", "-K", "2",
                 "--label", "pet", "--format", "csv"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1].startswith("low,pet,2,")
    assert "reference energies: " in captured.err and "computed" in captured.err
    assert main(["compare", str(path), "-K", "1"]) == 2
    assert "-K must be at least 2" in capsys.readouterr().err
    assert main(["compare", str(path), "--learning"]) == 2
    assert "give -o" in capsys.readouterr().err
