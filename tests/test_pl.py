from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from numpy.testing import assert_allclose

import scdmac
from scdmac.pl._plots import _agreement_table


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _terms(model, stage):
    return sorted(k.partition("_")[2] for k in model.history if k.startswith(f"{stage}_"))


def _keys(adata):
    return set(adata.obs), set(adata.obsm), set(adata.uns)


@pytest.fixture
def results(trained):
    """The trained model's AnnData with a 2-D embedding, as after sc.tl.umap (a copy: the fixture is shared)."""
    adata = trained.adata.copy()
    adata.obsm["X_umap"] = adata.obsm["X_scdmac"][:, :2]
    return adata


def test_training_curves_one_panel_per_stage(trained, tmp_path):
    before = _keys(trained.adata)
    fig = scdmac.pl.training_curves(trained, save=tmp_path / "curves.png")
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["denoise", "mask", "cluster"]
    for ax in fig.axes:  # one line per logged term
        assert sorted(line.get_label() for line in ax.get_lines()) == _terms(trained, ax.get_title())
    assert {"loss", "kl", "label_change"} <= {line.get_label() for line in fig.axes[2].get_lines()}
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert _keys(trained.adata) == before


def test_training_curves_scdsec_stages():
    """SCDSEC's stages, from a history shaped like its own (training one would take most of the budget)."""

    class Model:  # only ``history`` is read
        history = {
            f"{stage}_{term}": pd.DataFrame({f"{stage}_{term}": np.linspace(2.0, 1.0, n)}, dtype=object)
            for stage, n, terms in [
                ("pretrain", 4, ["loss", "rec", "zinb", "graph"]),
                ("cluster", 3, ["loss", "rec", "zinb", "graph", "kl", "label_change"]),
            ]
            for term in terms
        }

    fig = scdmac.pl.training_curves(Model())
    assert [ax.get_title() for ax in fig.axes] == ["pretrain", "cluster"]
    assert sorted(line.get_label() for line in fig.axes[0].get_lines()) == _terms(Model, "pretrain")
    assert len(fig.axes[1].get_lines()) == 6 and len(fig.axes[1].get_lines()[0].get_xdata()) == 3
    fig = scdmac.pl.training_curves(Model(), stages=["cluster"], keys="loss")  # a bare string is one key
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["loss"]


def test_training_curves_into_axes_and_selection(trained):
    _, ax = plt.subplots()
    out = scdmac.pl.training_curves(trained, stages="mask", keys=["loss"], ax=ax, log_y=True)
    assert out is ax and len(ax.get_lines()) == 1 and ax.get_yscale() == "log"
    with pytest.raises(ValueError, match="one stage"):
        scdmac.pl.training_curves(trained, ax=ax)
    with pytest.raises(ValueError, match=r"No history for stage\(s\) \['pretrain'\]: train them first"):
        scdmac.pl.training_curves(trained, stages="pretrain")
    with pytest.raises(ValueError, match="logged none of"):
        scdmac.pl.training_curves(trained, stages="mask", keys=["zinb"])


def test_show(trained, monkeypatch):
    """``show=True`` (or ``None`` in an interactive session) shows the figure and returns ``None``."""
    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    assert scdmac.pl.training_curves(trained, show=True) is None
    assert isinstance(scdmac.pl.training_curves(trained, show=False), Figure)
    assert isinstance(scdmac.pl.training_curves(trained), Figure)  # Agg: not interactive
    assert len(shown) == 1
    monkeypatch.setattr(matplotlib, "is_interactive", lambda: True)
    assert scdmac.pl.training_curves(trained) is None
    assert len(shown) == 2


def test_training_curves_untrained(small):
    scdmac.model.SCDMAC.setup_anndata(small)
    with pytest.raises(ValueError, match="run model.train"):
        scdmac.pl.training_curves(scdmac.model.SCDMAC(small, n_clusters=3))


def test_assignment_confidence_leaves_adata_alone(results, tmp_path, monkeypatch):
    before = _keys(results)
    ax = scdmac.pl.assignment_confidence(results, soft_key="scdmac_soft", save=tmp_path / "c.png")
    assert isinstance(ax, Axes) and ax.get_title().startswith("largest soft assignment")
    assert _keys(results) == before
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    # the colours are the largest soft assignments, in the cells' order
    colours = ax.collections[0].get_array()
    assert_allclose(np.sort(colours), np.sort(results.obsm["scdmac_soft"].max(1)), rtol=1e-6)
    _, own = plt.subplots()
    assert scdmac.pl.assignment_confidence(results, ax=own, size=5) is own
    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    assert scdmac.pl.assignment_confidence(results, show=True) is None
    assert _keys(results) == before


def test_assignment_confidence_missing_keys(results):
    with pytest.raises(KeyError, match=r"sc.tl.tsne"):
        scdmac.pl.assignment_confidence(results, basis="tsne")
    with pytest.raises(KeyError, match="train a model"):
        scdmac.pl.assignment_confidence(results, soft_key="scdsec_soft")


def test_label_agreement(results, tmp_path):
    before = _keys(results)
    ax = scdmac.pl.label_agreement(results, "scdmac_cluster", "cell_type", save=tmp_path / "a.png")
    assert isinstance(ax, Axes) and ax.get_title().startswith("ARI ")
    assert ax.get_ylabel() == "scdmac_cluster" and ax.get_xlabel() == "cell_type"
    n_clusters, n_types = results.obs["scdmac_cluster"].nunique(), results.obs["cell_type"].nunique()
    assert ax.images[0].get_array().shape == (n_clusters, n_types)
    assert_allclose(ax.images[0].get_array().sum(1), 1.0)
    assert len(ax.texts) == np.count_nonzero(ax.images[0].get_array())  # annotated
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"
    _, own = plt.subplots()
    counts = scdmac.pl.label_agreement(results, normalize=None, cmap="Blues", ax=own)
    assert counts is own and counts.images[0].get_array().sum() == results.n_obs
    assert _keys(results) == before
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


def test_assignment_confidence_follows_the_model_that_wrote_the_keys(results):
    sec_only = results.copy()
    sec_only.obsm["scdsec_soft"] = sec_only.obsm.pop("scdmac_soft")[:, ::-1]
    ax = scdmac.pl.assignment_confidence(sec_only)  # no soft_key: the SCDSEC result is found
    assert ax.get_title() == "largest soft assignment (scdsec_soft)"
    both = results.copy()
    both.obsm["scdsec_soft"] = both.obsm["scdmac_soft"]
    with pytest.raises(ValueError, match="two models"):
        scdmac.pl.assignment_confidence(both)
