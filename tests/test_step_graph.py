"""The Graph kept between MD steps (``geoff.step_graph``, ``skin_edges="keep"``): new
positions only while the Verlet list holds, the full path otherwise, overlaps still refused."""
import numpy as np
import pytest
from ase.build import bulk

from conftest import rattled_triclinic, small_model
from geoff.calculators.ase import GeoffCalculator
from geoff.structure_checks import OverlapError, record_training_distance


def keep_calc(model, **kw):
    # cuda_graphs off: on CUDA "auto" would take the captured search, not the kept Graph
    options = dict(dtype="float64", skin=0.8, neighbour_list="torch", skin_edges="keep",
                   cuda_graphs=False)
    options.update(kw)
    return GeoffCalculator(model, **options)


def fresh(model, atoms):
    """Energy and forces of ``atoms`` from a calculator with no history."""
    atoms = atoms.copy()
    atoms.calc = GeoffCalculator(model, dtype="float64", neighbour_list="torch", skin=0.0)
    return atoms.get_potential_energy(), atoms.get_forces()


def assert_same(got, want):
    assert abs(got[0] - want[0]) <= 1e-11
    np.testing.assert_allclose(got[1], want[1], rtol=0, atol=1e-11)


def test_steps_within_the_skin_send_positions_only():
    model = small_model("painn")
    atoms = rattled_triclinic(seed=4)
    calc = keep_calc(model)
    atoms.calc = calc
    atoms.get_potential_energy()
    first = calc.step_graph._graph
    rng = np.random.default_rng(1)
    for step in range(5):
        atoms.positions += rng.normal(0, 0.03, atoms.positions.shape)  # within skin / 2 in all
        got = atoms.get_potential_energy(), atoms.get_forces()
        assert_same(got, fresh(model, atoms))
        graph, pending = calc.step_graph(atoms)
        for key in ("species", "edge_index", "shifts", "cell", "pbc", "batch"):
            assert graph[key] is first[key], key  # the same device tensors, not re-uploaded
        assert pending is None  # nearest neighbours ~2.5 Å: no overlap within reach
    assert calc.neighbour_cache.builds == 1
    assert calc.step_graph.reused >= 5 and calc.step_graph.checked == 0


def cu_near_the_threshold():
    """(model, atoms, calc, energy): FCC Cu whose nearest neighbours (2.55 Å) are close to
    the model's overlap threshold (2.1 Å), in a kept-Graph calculator with a 1.2 Å skin."""
    model = small_model("schnet")
    record_training_distance(model, 4.2)  # threshold 0.5 x 4.2 Å
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2)
    calc = keep_calc(model, skin=1.2)
    atoms.calc = calc
    return model, atoms, calc, atoms.get_potential_energy()


def test_the_overlap_check_runs_where_the_bound_reaches_the_threshold():
    model, atoms, calc, _ = cu_near_the_threshold()
    atoms.positions[0] += [0.1, 0.0, 0.0]  # bound 2.55 - 0.2 Å: no check
    atoms.get_potential_energy()
    assert (calc.step_graph.reused, calc.step_graph.checked) == (1, 0)
    atoms.positions[0] += [0.2, 0.0, 0.0]  # bound 2.55 - 0.6 < 2.1: checked, none found
    got = atoms.get_potential_energy(), atoms.get_forces()
    assert (calc.step_graph.reused, calc.step_graph.checked) == (2, 1)
    assert_same(got, fresh(model, atoms))


@pytest.mark.parametrize("change", ["far move", "cell", "species", "atom count"])
def test_anything_but_a_small_move_takes_the_full_path(change):
    model = small_model("schnet")
    atoms = rattled_triclinic(seed=5)
    calc = keep_calc(model)
    atoms.calc = calc
    atoms.get_potential_energy()
    builds, reused = calc.neighbour_cache.builds, calc.step_graph.reused
    if change == "far move":
        atoms.positions[2] += [0.5, 0.0, 0.0]  # more than skin / 2 = 0.4 Å
    elif change == "cell":
        atoms.set_cell(atoms.cell.array * 1.01, scale_atoms=True)
    elif change == "species":
        atoms.numbers[[0, 1]] = atoms.numbers[[1, 0]]  # same count, other species per atom
    else:
        del atoms[-1]
    got = atoms.get_potential_energy(), atoms.get_forces()
    assert_same(got, fresh(model, atoms))
    assert calc.step_graph.reused == reused
    assert calc.neighbour_cache.builds == builds + (change != "species")


def test_an_overlap_on_a_kept_graph_is_refused_naming_the_atoms():
    model, atoms, calc, e0 = cu_near_the_threshold()
    d = atoms.get_distances(0, range(1, len(atoms)), mic=True, vector=True)
    k = 1 + int(np.argmin(np.linalg.norm(d, axis=1)))
    unit = d[k - 1] / np.linalg.norm(d[k - 1])
    start = atoms.positions.copy()
    atoms.positions[0] += 0.25 * unit  # 2.05 Å apart, each atom moved 0.25 < skin / 2
    atoms.positions[k] -= 0.25 * unit
    with pytest.raises(OverlapError, match=rf"atoms 0 \(Cu\) and {k} \(Cu\) are 2.0\d+ Å apart"):
        atoms.get_forces()
    assert calc.step_graph.checked == 1 and calc.neighbour_cache.builds == 1
    with pytest.raises(OverlapError):  # asked again: refused again, never a stale result
        atoms.get_potential_energy()
    atoms.positions[:] = start
    assert atoms.get_potential_energy() == pytest.approx(e0, abs=1e-12)


def test_no_overlap_check_reads_nothing_back():
    atoms = rattled_triclinic(seed=6)
    calc = keep_calc(small_model("schnet"), check_overlaps=False)
    atoms.calc = calc
    atoms.get_potential_energy()
    atoms.positions[0] += 0.01
    assert calc.step_graph(atoms)[1] is None
    assert calc.step_graph.reused == 1


def test_filtered_lists_have_no_step_graph():
    for skin_edges in ("filter", "auto"):  # auto filters on the CPU
        calc = GeoffCalculator(small_model("schnet"), skin=0.5, neighbour_list="torch",
                               skin_edges=skin_edges)
        assert calc.step_graph is None and calc.neighbour_cache.filter_edges


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("name", ["painn", "schnet"])
def test_auto_keeps_small_systems_whole_and_filters_large_ones(name, size, monkeypatch):
    """``skin_edges="auto"`` as on CUDA (the CPU stands in for the device here): the whole
    list and a kept Graph up to the limit (``AUTO_KEEP_MAX_ATOMS``, or the representation's
    own ``SKIN_KEEP_MAX_ATOMS``: SchNet's), the filtered list above."""
    import geoff.calculators.ase as ase_calc
    from geoff.potentials.schnet import SchNet

    monkeypatch.setattr(ase_calc, "AUTO_KEEP_MAX_ATOMS", 100)
    monkeypatch.setattr(SchNet, "SKIN_KEEP_MAX_ATOMS", 50)
    model = small_model(name)
    calc = keep_calc(model, skin_edges="keep")
    calc.skin_edges = "auto"  # what the constructor resolves "auto" to on CUDA
    atoms = rattled_triclinic(seed=9, n=(2, 2, 2) if size == "small" else (4, 4, 4))  # 8, 64
    atoms.calc = calc
    for step in range(3):
        atoms.positions[step] += 0.02
        got = atoms.get_potential_energy(), atoms.get_forces()
        assert_same(got, fresh(model, atoms))
    kept = len(atoms) <= (50 if name == "schnet" else 100)
    assert calc.neighbour_cache.filter_edges == (not kept)
    assert calc.step_graph.reused == (2 if kept else 0)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_kept_graph_on_cuda_gives_the_cpu_answers():
    model = small_model("painn")
    runs = {}
    for device in ("cpu", "cuda"):
        atoms = rattled_triclinic(seed=8)
        # on CUDA through the default "auto" (8 atoms: kept whole), on the CPU asked for
        calc = keep_calc(model, device=device, skin_edges="auto" if device == "cuda" else "keep")
        atoms.calc = calc
        rng = np.random.default_rng(2)
        out = []
        for step in range(6):
            atoms.positions += rng.normal(0, 0.05 if step != 3 else 0.3, atoms.positions.shape)
            out.append((atoms.get_potential_energy(), atoms.get_forces().copy()))
        runs[device] = out, calc.neighbour_cache.builds, calc.step_graph.reused
    (cpu, cpu_builds, cpu_reused), (gpu, gpu_builds, gpu_reused) = runs["cpu"], runs["cuda"]
    assert cpu_builds == gpu_builds >= 2 and cpu_reused == gpu_reused >= 3
    for a, b in zip(cpu, gpu):
        assert_same(a, b)
