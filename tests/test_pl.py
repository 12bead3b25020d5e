from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from numpy.testing import assert_allclose

import scdmac
from scdmac.pl._plots import _agreement_table


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _terms(model, stage):
    return [k.partition("_")[2] for k in model.history if k.startswith(f"{stage}_")]


def _keys(adata):
    return set(adata.obs), set(adata.obsm), set(adata.uns)


def _titles(fig_or_ax):
    axes = fig_or_ax.axes if isinstance(fig_or_ax, Figure) else [fig_or_ax]
    return [ax.get_title() for ax in axes]


@pytest.fixture
def results(trained):
    """The trained model's AnnData with a 2-D embedding, as after sc.tl.umap (a copy: the fixture is shared)."""
    adata = trained.adata.copy()
    adata.obsm["X_umap"] = adata.obsm["X_scdmac"][:, :2]
    return adata


def _by_hand(prefix="scdmac", empty="2", n_obs=60, seed=0):
    """A model's results written by hand: 4 clusters, cluster ``empty`` holding no cell, as write_results leaves it."""
    rng = np.random.default_rng(seed)
    categories = ["0", "1", "2", "3"]
    used = [c for c in categories if c != empty]
    labels = rng.choice(used, n_obs)
    soft = rng.dirichlet(np.ones(4), n_obs) * 0.5
    soft[np.arange(n_obs), [categories.index(c) for c in labels]] += 0.5  # the label is the argmax
    cell_type = pd.Categorical(rng.choice(["a", "b", "c"], n_obs), categories=["a", "b", "c", "unused"])
    obs = pd.DataFrame(
        {f"{prefix}_cluster": pd.Categorical(labels, categories=categories), "cell_type": cell_type},
        index=[f"cell{i}" for i in range(n_obs)],
    )
    return AnnData(obs=obs, obsm={f"{prefix}_soft": soft, "X_umap": rng.normal(size=(n_obs, 2))})


# ---- training_curves -----------------------------------------------------------------------------


def test_training_curves_one_panel_per_stage_and_term(trained, tmp_path):
    before = _keys(trained.adata)
    fig = scdmac.pl.training_curves(trained, save=tmp_path / "curves.png")
    assert isinstance(fig, Figure)
    expected = [f"{s}: {t}" for s in ("denoise", "mask", "cluster") for t in _terms(trained, s)]
    assert _titles(fig) == expected and len(fig.axes) == len(trained.history)
    assert {"cluster: loss", "cluster: kl", "cluster: label_change"} <= set(expected)
    colours = {}
    for ax in fig.axes:
        (line,) = ax.get_lines()  # one curve a panel: no legend needed, none drawn
        assert ax.get_legend() is None and ax.get_xlabel() == "epoch"
        stage, _, term = ax.get_title().partition(": ")
        values = trained.history[f"{stage}_{term}"].to_numpy(dtype=float).ravel()
        assert_allclose(line.get_ydata(), values)
        colours.setdefault(stage, set()).add(to_hex(line.get_color()))
        # each panel's y axis is fitted to its own term: a tiny KL term next to a large ZINB loss is not flat
        low, high = ax.get_ylim()
        if np.ptp(values) > 0:
            assert low <= values.min() and values.max() <= high and np.ptp(values) > 0.5 * (high - low)
    assert all(len(c) == 1 for c in colours.values())  # one colour per stage ...
    assert len(set().union(*colours.values())) == 3  # ... and the stages differ
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert _keys(trained.adata) == before


def test_training_curves_rows_start_with_a_stage(trained):
    fig = scdmac.pl.training_curves(trained, keys=["loss", "kl"])
    # the stages that logged the keys, each on its own row of the grid, in the order of `keys`
    assert _titles(fig) == ["denoise: loss", "mask: loss", "cluster: loss", "cluster: kl"]
    rows = [ax.get_subplotspec().rowspan.start for ax in fig.axes]
    cols = [ax.get_subplotspec().colspan.start for ax in fig.axes]
    assert rows == [0, 1, 2, 2] and cols == [0, 0, 0, 1]


def _history(stages):
    return {
        f"{stage}_{term}": pd.DataFrame({f"{stage}_{term}": np.linspace(2.0, 1.0, n)}, dtype=object)
        for stage, n, terms in stages
        for term in terms
    }


SCDSEC_HISTORY = _history(
    [
        ("pretrain", 4, ["loss", "rec", "zinb", "graph"]),
        ("cluster", 3, ["loss", "rec", "zinb", "graph", "kl", "label_change"]),
    ]
)


def test_training_curves_scdsec_history():
    """SCDSEC's stages, from a history shaped like its own (training one would take most of the budget)."""

    class Model:  # only ``history`` is read
        history = SCDSEC_HISTORY

    fig = scdmac.pl.training_curves(Model())
    assert _titles(fig)[:4] == ["pretrain: loss", "pretrain: rec", "pretrain: zinb", "pretrain: graph"]
    assert len(fig.axes) == 10 and _titles(fig)[-1] == "cluster: label_change"
    assert [len(ax.get_lines()[0].get_xdata()) for ax in fig.axes] == [4] * 4 + [3] * 6
    # a bare history works too; a bare string is one key, not a set of characters
    fig = scdmac.pl.training_curves(SCDSEC_HISTORY, stages=["cluster"], keys="loss")
    assert _titles(fig) == ["cluster: loss"]


def test_training_curves_declared_stage_names_split_the_keys():
    class Model:  # a stage name holding "_": the model's declared stages, not the first "_", split the keys
        stages = [type("Stage", (), {"name": "pre_train"})(), type("Stage", (), {"name": "cluster"})()]
        history = _history([("pre_train", 3, ["loss", "mask_bce"]), ("cluster", 2, ["loss"])])

    fig = scdmac.pl.training_curves(Model())
    assert _titles(fig) == ["pre_train: loss", "pre_train: mask_bce", "cluster: loss"]
    fig = scdmac.pl.training_curves(Model(), stages="cluster")  # a stage keeps its colour when drawn alone
    assert to_hex(fig.axes[0].get_lines()[0].get_color()) == to_hex("C1")


def test_training_curves_into_axes_and_selection(trained):
    _, ax = plt.subplots()
    out = scdmac.pl.training_curves(trained, stages="mask", keys=["loss"], ax=ax, log_y=True)
    assert out is ax and len(ax.get_lines()) == 1 and ax.get_yscale() == "log" and ax.get_title() == "mask: loss"
    with pytest.raises(ValueError, match=r"`ax` holds one panel but the selection has 3 .* pass one stage and one key"):
        scdmac.pl.training_curves(trained, stages="mask", ax=ax)
    with pytest.raises(ValueError, match=r"No history for stage\(s\) \['pretrain'\]: train them first"):
        scdmac.pl.training_curves(trained, stages="pretrain")
    with pytest.raises(ValueError, match=r"Stage 'mask' logged none of \['zinb'\]"):
        scdmac.pl.training_curves(trained, stages="mask", keys=["zinb"])
    with pytest.raises(ValueError, match=r"logged none of \['kll'\]"):  # a misspelt key is not skipped
        scdmac.pl.training_curves(trained, keys=["kl", "kll"])


def test_training_curves_log_y_skips_panels_without_positive_values():
    history = {"cluster_loss": pd.DataFrame({"x": [2.0, 1.0]}), "cluster_label_change": pd.DataFrame({"x": [0.0, 0]})}
    fig = scdmac.pl.training_curves(history, log_y=True)
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "linear"]


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


# ---- assignment_confidence -----------------------------------------------------------------------


def test_assignment_confidence_leaves_adata_alone(results, tmp_path, monkeypatch):
    before = _keys(results)
    ax = scdmac.pl.assignment_confidence(results, save=tmp_path / "c.png")
    assert isinstance(ax, Axes) and ax.get_title() == "largest soft assignment (scdmac_soft)"
    assert _keys(results) == before
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    # the colours are the largest soft assignments, in the cells' order
    colours = ax.collections[0].get_array()
    assert_allclose(np.sort(colours), np.sort(results.obsm["scdmac_soft"].max(1)), rtol=1e-6)
    _, own = plt.subplots()
    assert scdmac.pl.assignment_confidence(results, ax=own, size=5) is own
    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    assert scdmac.pl.assignment_confidence(results, show=True) is None
    assert scdmac.pl.assignment_confidence(results, per_cluster=True, show=True) is None
    assert _keys(results) == before


def test_assignment_confidence_missing_keys(results):
    with pytest.raises(KeyError, match=r"sc.tl.tsne"):
        scdmac.pl.assignment_confidence(results, basis="tsne")
    with pytest.raises(KeyError, match="no 'scdsec_soft': train a model"):
        scdmac.pl.assignment_confidence(results, soft_key="scdsec_soft")
    with pytest.raises(KeyError, match="no 'leiden'"):
        scdmac.pl.assignment_confidence(results, cluster_key="leiden", per_cluster=True)


def test_assignment_confidence_follows_the_model_that_wrote_the_keys():
    sec = _by_hand("scdsec")
    assert scdmac.pl.assignment_confidence(sec).get_title() == "largest soft assignment (scdsec_soft)"
    ax = scdmac.pl.assignment_confidence(sec, per_cluster=True)
    assert ax.get_xlabel() == "scdsec_cluster" and ax.get_title().endswith("(scdsec_soft)")

    both = _by_hand("scdmac")
    both.obsm["scdsec_soft"] = both.obsm["scdmac_soft"]
    message = r"two models, SCDMAC \(obsm\['scdmac_soft'\]\) and SCDSEC .*: pass soft_key='scdmac_soft' or soft_key="
    with pytest.raises(ValueError, match=message):
        scdmac.pl.assignment_confidence(both)
    assert scdmac.pl.assignment_confidence(both, soft_key="scdsec_soft").get_title().endswith("(scdsec_soft)")

    neither = _by_hand("mine")
    message = r"holds none of \['scdmac_soft', 'scdsec_soft'\], the keys that SCDMAC's and SCDSEC's model.train\(\)"
    with pytest.raises(KeyError, match=message):
        scdmac.pl.assignment_confidence(neither)


def test_results_of_tl_under_key_added_are_found():
    # scdmac.tl records the model in uns[key_added]["params"]: the plots find its keys without being told
    adata = _by_hand("mine")
    adata.uns["mine"] = {"params": {"model": "SCDSEC", "n_clusters": 4}}
    assert scdmac.pl.assignment_confidence(adata).get_title() == "largest soft assignment (mine_soft)"
    ax = scdmac.pl.label_agreement(adata)
    assert "mine_cluster" in (ax.get_xlabel(), ax.get_ylabel())
    adata.uns["other"] = {"params": {"model": "SCDMAC"}}
    adata.obsm["other_soft"] = adata.obsm["mine_soft"]
    with pytest.raises(ValueError, match=r"two models, SCDSEC \(key_added='mine'\) .*: pass soft_key='mine_soft' or"):
        scdmac.pl.assignment_confidence(adata)


def test_scanpy_forms_of_basis_and_save(results, tmp_path):
    import scanpy as sc

    figdir, file_format = sc.settings.figdir, sc.settings.file_format_figs
    sc.settings.figdir, sc.settings.file_format_figs = tmp_path / "figures", "png"
    try:
        scdmac.pl.assignment_confidence(results, basis="X_umap", save=True)
        scdmac.pl.assignment_confidence(results, save="_run1.svg")
        scdmac.pl.label_agreement(results, save=".pdf")
    finally:
        sc.settings.figdir, sc.settings.file_format_figs = figdir, file_format
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == [
        "assignment_confidence.png",
        "assignment_confidence_run1.svg",
        "label_agreement.pdf",
    ]
    with pytest.raises(TypeError, match="save must be a file path, True or a scanpy-style suffix"):
        scdmac.pl.assignment_confidence(results, save=3)


def test_assignment_confidence_custom_keys():
    adata = _by_hand("mine")
    ax = scdmac.pl.assignment_confidence(adata, soft_key="mine_soft", per_cluster=True)  # mine_cluster goes with it
    assert ax.get_xlabel() == "mine_cluster"
    adata.obs["labels"] = adata.obs.pop("mine_cluster")
    with pytest.raises(KeyError, match="no 'mine_cluster', the labels written with 'mine_soft': pass cluster_key="):
        scdmac.pl.assignment_confidence(adata, soft_key="mine_soft", per_cluster=True)
    ax = scdmac.pl.assignment_confidence(adata, soft_key="mine_soft", cluster_key="labels", per_cluster=True)
    assert ax.get_xlabel() == "labels" and ax.get_title() == "largest soft assignment per cluster (mine_soft)"


def test_assignment_confidence_per_cluster_keeps_an_empty_cluster(tmp_path):
    adata = _by_hand(empty="2")
    ax = scdmac.pl.assignment_confidence(adata, per_cluster=True, save=tmp_path / "p.png")
    assert ax.get_ylabel() == "largest soft assignment" and ax.get_xlabel() == "scdmac_cluster"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2 (empty)", "3"]
    # one box per cluster with cells, at its category's place, spanning its cells' quartiles
    confidence = adata.obsm["scdmac_soft"].max(1)
    boxes = ax.patches
    assert len(boxes) == 3
    for box, cluster in zip(boxes, ["0", "1", "3"], strict=True):
        extent = box.get_path().get_extents()
        assert extent.x0 < int(cluster) < extent.x1
        values = confidence[(adata.obs["scdmac_cluster"] == cluster).to_numpy()]
        assert_allclose([extent.y0, extent.y1], np.percentile(values, [25, 75]))
    assert any(np.allclose(line.get_ydata(), 0.25) for line in ax.get_lines())  # 1/k: no preference
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    # the embedding needs no labels: an empty category does not matter there
    assert scdmac.pl.assignment_confidence(adata).get_title() == "largest soft assignment (scdmac_soft)"


def test_assignment_confidence_labels_must_match_the_soft_columns():
    adata = _by_hand(empty="3")
    adata.obs["scdmac_cluster"] = adata.obs["scdmac_cluster"].cat.remove_unused_categories()
    with pytest.raises(ValueError, match=r"has 3 clusters but adata.obsm\['scdmac_soft'\] has 4 columns"):
        scdmac.pl.assignment_confidence(adata, per_cluster=True)


# ---- label_agreement -----------------------------------------------------------------------------


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


def test_label_agreement_keeps_an_empty_cluster():
    adata = _by_hand(empty="2")
    ax = scdmac.pl.label_agreement(adata)
    assert ax.get_ylabel() == "scdmac_cluster"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2 (empty)", "3"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]  # a type no cell has is left out
    table = np.ma.filled(ax.images[0].get_array(), np.nan)
    assert table.shape == (4, 3) and np.isnan(table[2]).all()  # no fractions of an empty cluster
    assert_allclose(np.delete(table, 2, axis=0).sum(1), 1.0)
    assert len(ax.texts) == np.count_nonzero(np.nan_to_num(table))
    counts = np.ma.filled(scdmac.pl.label_agreement(adata, normalize=None).images[0].get_array(), np.nan)
    assert counts[2].tolist() == [0, 0, 0] and counts.sum() == adata.n_obs
    by_type = np.ma.filled(scdmac.pl.label_agreement(adata, normalize="reference").images[0].get_array(), np.nan)
    assert_allclose(by_type.sum(0), 1.0) and by_type[2].tolist() == [0, 0, 0]


def test_label_agreement_follows_the_model_that_wrote_the_keys():
    assert scdmac.pl.label_agreement(_by_hand("scdsec")).get_ylabel() == "scdsec_cluster"
    both = _by_hand("scdmac")
    both.obs["scdsec_cluster"] = both.obs["scdmac_cluster"]
    message = "two models.*: pass cluster_key='scdmac_cluster' or cluster_key='scdsec_cluster'"
    with pytest.raises(ValueError, match=message):
        scdmac.pl.label_agreement(both)
    with pytest.raises(KeyError, match=r"holds none of \['scdmac_cluster', 'scdsec_cluster'\].*pass cluster_key="):
        scdmac.pl.label_agreement(_by_hand("mine"))
    assert scdmac.pl.label_agreement(_by_hand("mine"), "mine_cluster").get_ylabel() == "mine_cluster"


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


def test_agreement_table_rows_are_the_categories():
    clusters = pd.Categorical(["10", "2", "2"], categories=["2", "5", "10"])
    counts = _agreement_table(clusters, ["a", "b", "b"], None)
    assert counts.index.tolist() == ["2", "5", "10"] and counts.loc["5"].tolist() == [0, 0]
    # plain labels: in numeric order when they are numbers
    assert _agreement_table(np.array(["10", "2", "9"]), ["a", "b", "b"], None).index.tolist() == ["2", "9", "10"]
