"""Nonnegative similarity matching at its defaults on data it was not tuned to (issue 20):
assembly families with randomised sizes, rates, overlap, background cells, counts and
calcium, and the shared zebrafish tectum, each beside the offline baselines on the same frames.
The full sweep (full-length sessions, NMF and spectral clustering too) is
`benchmarks/nsm_science.py`."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.nsm_science import stream_nsm, zebrafish
from streamlab.sim.assemblies import (
    FAMILIES,
    assembly_ari,
    assign_cells,
    channels_owned,
    frame_shares,
    offline_assignments,
)
from tests.conftest import SHARED_DATA

SEEDS = range(10)
FRAMES = 1500  # shorter sessions than the benchmark's 3,000-4,000 frames, to fit the suite
ZEBRAFISH = SHARED_DATA / "zebrafish-tectum" / "zf_20151104-f1.mat"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_nsm_groups_cells_at_least_as_well_as_kmeans_without_degenerate_units(family) -> None:
    """Ten seeds per family (30-200 cells, 3-8 assemblies of unequal sizes and event rates,
    overlapping members, background cells, spike counts or calcium dF/F at 2-30 Hz), 1,500
    frames, `nsm` at its defaults with k = the number of assemblies; each cell to the unit whose
    output it correlates with most (`membership`), ARI on the cells in exactly one assembly.
    Against k-means on the same frames (each cell to its largest centroid): nsm's median ARI is
    at least k-means' and its worst seed is above chance (ARI > 0). On every seed every unit
    owns at least 2 cells and wins at least 1/(4 k) of the frames where a unit answers (no dead
    or degenerate unit; every assembly here has at least 3 cells). Measured (median / worst):
    calcium nsm 0.65 / 0.10, k-means 0.44 / 0.16; spike_counts nsm 0.85 / 0.38, k-means 0.75 /
    0.16; fewest cells owned 4, smallest frame share 1.03 / (4 k). The worst seed is not
    asserted against k-means' worst: at 1,500 frames nsm's calcium worst is below it (at the
    benchmark's full length it is above)."""
    ours, kmeans, worst_owned, worst_share = [], [], [], []
    for seed in SEEDS:
        data = FAMILIES[family](seed, n_frames=FRAMES)
        k = data.n_assemblies
        outputs, membership = stream_nsm(data.activity, k)
        ours.append(assembly_ari(data, assign_cells(membership)))
        kmeans.append(assembly_ari(data, offline_assignments(data.activity, k)["kmeans"]))
        worst_owned.append(int(channels_owned(membership).min()))
        worst_share.append(float(frame_shares(outputs).min() * 4 * k))
    print(
        f"\nNSM {family}: ARI median {np.median(ours):.2f} worst {min(ours):.2f}; k-means "
        f"median {np.median(kmeans):.2f} worst {min(kmeans):.2f}; per seed nsm "
        f"{np.round(ours, 2).tolist()}, k-means {np.round(kmeans, 2).tolist()}; fewest cells "
        f"owned {worst_owned}; smallest frame share x 4k {np.round(worst_share, 2).tolist()}"
    )
    assert np.median(ours) >= np.median(kmeans)
    assert min(ours) > 0.0
    assert min(worst_owned) >= 2
    assert min(worst_share) >= 1.0


@pytest.mark.skipif(not ZEBRAFISH.exists(), reason=f"real recording not found at {ZEBRAFISH}")
def test_nsm_on_the_zebrafish_tectum_beside_nmf_and_kmeans() -> None:
    """The shared f1 recording (114 cells, 4,245 frames, 5 published assemblies), `nsm` at its
    defaults with 5 units, scored as the families are (61 cells in exactly one assembly).
    Issue 20 measured nsm 0.43 with two degenerate units, NMF 0.51. Asserted: no degenerate
    unit (each owns at least 2 cells and wins at least 1/(4 k) of the answered frames) and an
    ARI at least NMF's. Measured: nsm 0.68 (each cell to the unit whose output it correlates
    with most; by the largest feedforward weight, as before, 0.49), NMF 0.51, k-means on
    frames 0.70 (spectral clustering of the cells 0.63, in the benchmark)."""
    data = zebrafish(ZEBRAFISH)
    outputs, membership = stream_nsm(data.activity, data.n_assemblies)
    ours = assembly_ari(data, assign_cells(membership))
    baselines = {
        name: assembly_ari(data, assignment)
        for name, assignment in offline_assignments(data.activity, data.n_assemblies).items()
        if name != "spectral"
    }
    owned, shares = channels_owned(membership), frame_shares(outputs)
    print(
        f"\nNSM zebrafish f1: ARI {ours:.3f}, NMF {baselines['nmf']:.3f}, k-means "
        f"{baselines['kmeans']:.3f}; cells owned {owned.tolist()}, frame shares "
        f"{np.round(shares, 3).tolist()}"
    )
    assert owned.min() >= 2 and shares.min() >= 1 / (4 * data.n_assemblies)
    assert ours >= baselines["nmf"]
