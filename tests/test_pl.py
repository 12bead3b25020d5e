from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from numpy.testing import assert_allclose

import scdmac
from scdmac.pl._plots import _agreement_table


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


@pytest.fixture
def results(trained):
    """The trained model's AnnData with a 2-D embedding, as after sc.tl.umap (a copy: the fixture is shared)."""
    adata = trained.adata.copy()
    adata.obsm["X_umap"] = adata.obsm["X_scdmac"][:, :2]
    return adata


def test_training_curves_one_panel_per_stage(trained, tmp_path):
    fig = scdmac.pl.training_curves(trained, save=tmp_path / "curves.png")
    assert [ax.get_title() for ax in fig.axes] == ["denoise", "mask", "cluster"]
    cluster_lines = {line.get_label() for line in fig.axes[2].get_lines()}
    assert {"loss", "kl", "label_change"} <= cluster_lines
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_training_curves_into_axes_and_selection(trained):
    _, ax = plt.subplots()
    out = scdmac.pl.training_curves(trained, stages="mask", keys=["loss"], ax=ax, log_y=True)
    assert out is ax and len(ax.get_lines()) == 1 and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="one stage"):
        scdmac.pl.training_curves(trained, ax=ax)
    with pytest.raises(ValueError, match="No history for stage"):
        scdmac.pl.training_curves(trained, stages="pretrain")


def test_training_curves_untrained(small):
    scdmac.model.SCDMAC.setup_anndata(small)
    with pytest.raises(ValueError, match="run model.train"):
        scdmac.pl.training_curves(scdmac.model.SCDMAC(small, n_clusters=3))


def test_assignment_confidence_leaves_adata_alone(results, tmp_path):
    before = (set(results.obs), set(results.obsm), set(results.uns))
    ax = scdmac.pl.assignment_confidence(results, soft_key="scdmac_soft", save=tmp_path / "c.png")
    assert ax.get_title().startswith("largest soft assignment")
    assert (set(results.obs), set(results.obsm), set(results.uns)) == before
    assert (tmp_path / "c.png").stat().st_size > 0
    assert scdmac.pl.assignment_confidence(results, show=True) is None


def test_assignment_confidence_missing_keys(results):
    with pytest.raises(KeyError, match=r"sc.tl.tsne"):
        scdmac.pl.assignment_confidence(results, basis="tsne")
    with pytest.raises(KeyError, match="train a model"):
        scdmac.pl.assignment_confidence(results, soft_key="scdsec_soft")


def test_label_agreement(results):
    ax = scdmac.pl.label_agreement(results, "scdmac_cluster", "cell_type")
    assert ax.get_title().startswith("ARI ")
    assert ax.get_ylabel() == "scdmac_cluster" and ax.get_xlabel() == "cell_type"
    with pytest.raises(KeyError, match="no 'celltype'"):
        scdmac.pl.label_agreement(results, reference_key="celltype")


def test_agreement_table_normalisation():
    clusters = np.array(["0", "0", "1", "1", "1"])
    reference = np.array(["a", "b", "b", "b", "b"])
    rows = _agreement_table(clusters, reference, "cluster")
    assert_allclose(rows.sum(1), 1.0)
    assert rows.loc["0", "a"] == 0.5
    cols = _agreement_table(clusters, reference, "reference")
    assert_allclose(cols.sum(0), 1.0)
    counts = _agreement_table(clusters, reference, None)
    assert counts.to_numpy().sum() == 5
    with pytest.raises(ValueError, match="normalize"):
        _agreement_table(clusters, reference, "rows")
