from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from numpy.testing import assert_allclose
from sklearn.metrics import adjusted_rand_score

import scdmac
from scdmac.data import CellGraph
from scdmac.data._graph import ADJACENCY_BLOCK_ROWS, _to_torch, normalized_adjacency
from scdmac.model import SCDSEC
from scdmac.module import FusionEncoder

from .conftest import FAST_TRAIN, assert_results_written

SMALL_NET = {"hidden_widths": (64, 64, 128)}


@pytest.fixture(scope="module")
def _trained_sec(_small):
    adata = _small.copy()
    SCDSEC.setup_anndata(adata, layer="counts", partition_size=64)
    scvi.settings.seed = 0
    model = SCDSEC(adata, n_clusters=3, **SMALL_NET)
    model.train(**FAST_TRAIN)
    return model


def _train(adata, seed=0, n_clusters=3, train=FAST_TRAIN, **kwargs):
    scvi.settings.seed = seed  # before setup: its PCA and partitioning take the seed too
    SCDSEC.setup_anndata(adata, partition_size=64)
    model = SCDSEC(adata, n_clusters=n_clusters, **{**SMALL_NET, **kwargs})
    model.train(**train)
    return model


def test_results_written_with_documented_keys(_trained_sec):
    adata = _trained_sec.adata
    assert adata.n_obs == 300
    assert_results_written(adata, "scdsec", n_latent=10, n_clusters=3)
    assert np.isfinite(adata.obsm["X_scdsec"]).all()
    assert {"_scdsec_indices", "_scdsec_partition", "scdsec_cluster"} <= set(adata.obs)
    assert "scdsec_hvg" in adata.var


def test_predict_and_latent(_trained_sec):
    hard = _trained_sec.predict()
    soft = _trained_sec.predict(soft=True)
    assert hard.shape == (300,) and 0 <= hard.min() and hard.max() < 3
    assert (soft.argmax(1) == hard).all()
    assert (_trained_sec.predict(indices=[1, 4]) == hard[[1, 4]]).all()
    assert _trained_sec.get_latent_representation().shape == (300, 10)


def test_history_has_every_stage_and_term(_trained_sec):
    for key in ("pretrain_loss", "pretrain_rec", "pretrain_zinb", "pretrain_graph", "cluster_loss", "cluster_kl"):
        assert key in _trained_sec.history
        assert np.isfinite(_trained_sec.history[key].to_numpy(dtype=float)).all()


def test_repr(_trained_sec):
    assert "SCDSEC" in repr(_trained_sec) and "64-64-128-10" in repr(_trained_sec)


def test_save_load_roundtrip(_trained_sec, tmp_path):
    _trained_sec.save(tmp_path / "m", overwrite=True)
    loaded = SCDSEC.load(tmp_path / "m", adata=_trained_sec.adata)
    assert_allclose(loaded.get_latent_representation(), _trained_sec.get_latent_representation(), atol=1e-5)
    assert (loaded.predict() == _trained_sec.predict()).all()


def test_user_data_untouched(small):
    X, counts = small.X.copy(), small.layers["counts"].copy()
    obs_cols, var_cols, obsm_keys = set(small.obs), set(small.var), set(small.obsm)
    _train(small)
    assert (small.X != X).nnz == 0 and (small.layers["counts"] != counts).nnz == 0
    assert set(small.obs) - obs_cols == {"_scdsec_indices", "_scdsec_partition", "scdsec_cluster"}
    assert set(small.var) - var_cols == {"scdsec_hvg"}
    assert set(small.obsm) - obsm_keys == {"X_scdsec", "scdsec_soft", "_scdsec_neighbors"}


def test_same_seed_same_labels(small):
    a = _train(small.copy(), seed=5).predict()
    b = _train(small.copy(), seed=5).predict()
    assert (a == b).all()


@pytest.mark.parametrize("input_scaling", ["batch", "global"])
def test_whole_graph_passes_reused_without_changing_results(small, monkeypatch, input_scaling):
    # a training reuses a whole-graph pass over unchanged weights: fewer passes, the same results to the
    # bit; with fixed input statistics nothing but the optimiser steps marks the weights as changed
    from scdmac.module import SCDSECModule

    passes = []
    embed = SCDSECModule.embed
    monkeypatch.setattr(SCDSECModule, "embed", lambda self, *a, **k: passes.append(1) or embed(self, *a, **k))
    cached = _train(small.copy(), seed=3, input_scaling=input_scaling)
    with_cache = len(passes)
    reuse = SCDSEC._whole_graph_embedding

    def never_reuse(self, adata, x_in):
        self._pass_cache = None
        return reuse(self, adata, x_in)

    monkeypatch.setattr(SCDSEC, "_whole_graph_embedding", never_reuse)
    passes.clear()
    fresh = _train(small.copy(), seed=3, input_scaling=input_scaling)
    assert with_cache < len(passes)
    assert np.array_equal(cached.adata.obsm["X_scdsec"], fresh.adata.obsm["X_scdsec"])
    assert (cached.predict() == fresh.predict()).all()
    # outside train() nothing is reused: a changed weight shows at once
    before = cached.get_latent_representation()
    with torch.no_grad():
        cached.module.encoder.ae[0].weight.mul_(2.0)
    assert not np.array_equal(cached.get_latent_representation(), before)


def test_training_leaves_global_settings_alone(small):
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    _train(small, seed=4)
    assert scvi.settings.seed == 4
    assert torch.get_num_threads() == threads and torch.get_default_dtype() == dtype


def test_n_clusters_estimated_and_saved(small, tmp_path):
    model = _train(small, n_clusters=None)
    k = model.n_clusters_
    assert 2 <= k <= 12 and model.predict(soft=True).shape[1] == k
    model.save(tmp_path / "m")
    assert SCDSEC.load(tmp_path / "m", adata=small).n_clusters_ == k


@pytest.mark.parametrize(
    "switches",
    [
        {"layerwise": False},
        {"alpha": 1.0},
        {"alpha": 0.0},
        {"rec_weight": 0.0},
        {"zinb_weight": 0.0},
        {"graph_weight": 0.0},
        {"cluster_weight": 0.0},
    ],
    ids=["single_fusion", "no_gcn", "no_ae", "no_mse", "no_zinb", "no_graph", "no_kl"],
)
def test_ablations_train(small, switches):
    model = _train(small, **switches)
    assert model.predict().shape == (300,)
    terms = {k.split("_", 1)[1] for k in model.history if k.startswith("pretrain_")}
    for name, weight in (("rec", "rec_weight"), ("zinb", "zinb_weight"), ("graph", "graph_weight")):
        assert (name in terms) == (switches.get(weight, 1.0) > 0)
    assert ("cluster_kl" in model.history) == (switches.get("cluster_weight", 1.0) > 0)
    encoder = model.module.encoder
    assert (encoder.ae is None) == (switches.get("alpha", 0.5) == 0.0)
    assert (encoder.gcn is None) == (switches.get("alpha", 0.5) == 1.0)
    assert encoder.layerwise == switches.get("layerwise", True)


def test_all_terms_off_is_refused(small):
    SCDSEC.setup_anndata(small)
    model = SCDSEC(small, n_clusters=3, rec_weight=0, zinb_weight=0, graph_weight=0, **SMALL_NET)
    with pytest.raises(ValueError, match="switched off"):
        model.train(stages="pretrain", **FAST_TRAIN)


def test_bad_alpha(small):
    SCDSEC.setup_anndata(small)
    with pytest.raises(ValueError, match="alpha"):
        SCDSEC(small, alpha=1.5)


def test_single_stage_rerun(small):
    SCDSEC.setup_anndata(small)
    model = SCDSEC(small, n_clusters=3, **SMALL_NET)
    model.train(stages="pretrain", **FAST_TRAIN)
    with pytest.raises(RuntimeError, match="no clusters yet"):
        model.predict()
    model.train(stages="cluster", **FAST_TRAIN)
    assert "scdsec_cluster" in small.obs
    with pytest.raises(ValueError, match="Unknown stage"):
        model.train(stages="denoise")


def test_genes_below_min_fraction_are_dropped(small):
    X = small.X.tolil()
    X[:, :5] = 0
    X[:2, :5] = 1  # detected in 2 of 300 cells (< 1%)
    small.X = X.tocsr()
    SCDSEC.setup_anndata(small, n_top_genes=1000)
    assert not small.var["scdsec_hvg"].iloc[:5].any()


def test_several_graph_components_train(small):
    """Two far-apart groups give a graph without edges between them; training must not care."""
    X = small.X.toarray()
    X[:150] = np.roll(X[:150], 100, axis=1) * 3
    small.X = sp.csr_matrix(X)
    SCDSEC.setup_anndata(small, partition_size=64)
    graph = CellGraph(small.obsm["_scdsec_neighbors"])
    n_components, _ = sp.csgraph.connected_components(graph.adjacency)
    assert n_components >= 2
    model = SCDSEC(small, n_clusters=2, **SMALL_NET)
    model.train(**FAST_TRAIN)
    assert np.isfinite(model.get_latent_representation()).all()


def test_subgraph_of_cells_without_neighbours_keeps_self_loops():
    rng = np.random.default_rng(0)
    indices = np.array([rng.choice(np.delete(np.arange(50), i), 5, replace=False) for i in range(50)])
    graph = CellGraph(indices)
    # a cell and none of its neighbours: an isolated node in the subgraph
    lonely = np.array([0, *np.setdiff1d(np.arange(50), [0, *graph.adjacency[0].indices])[:3]])
    sub = graph.subgraph(lonely)
    adj = sub["adj"].to_dense()
    assert torch.isfinite(adj).all()
    assert adj[0, 0] > 0 and adj[0, 1:].abs().sum() == 0


def test_graph_of_20k_cells_stays_sparse():
    rng = np.random.default_rng(0)
    n, k = 20_000, 15
    indices = rng.integers(0, n, size=(n, k))
    graph = CellGraph(indices)
    assert sp.issparse(graph.adjacency) and graph.adjacency.nnz <= 2 * n * k
    blocks = graph.normalized()
    assert all(b.is_sparse and b.shape[1] == n and b.shape[0] <= ADJACENCY_BLOCK_ROWS for b in blocks)
    assert sum(b.shape[0] for b in blocks) == n
    assert sum(b._nnz() for b in blocks) <= 2 * n * k + n  # edges both ways plus self-loops, never n × n
    batch = graph.subgraph(np.arange(512))
    assert batch["adj"].is_sparse and batch["edges"].shape[0] == 2


@pytest.mark.parametrize(("alpha", "layerwise"), [(0.5, True), (0.3, False), (0.0, True), (1.0, True)])
def test_fusion_over_row_blocks_equals_the_whole_graph(alpha, layerwise):
    # a whole-graph pass takes the graph in row blocks to bound its memory: the same numbers (to float
    # rounding: a widening layer projects each block's aggregate), through a widening and a narrowing layer
    # (which the blocked pass carries as its two projections)
    rng = np.random.default_rng(0)
    graph = CellGraph(rng.integers(0, 50, size=(50, 4)))
    blocks = graph.normalized(block_rows=16)
    assert [b.shape[0] for b in blocks] == [12, 13, 13, 12]  # equal sizes, no sliver of 2 rows
    torch.manual_seed(0)
    enc = FusionEncoder(6, (8, 3, 12), 2, alpha=alpha, layerwise=layerwise).eval()
    x = torch.randn(50, 6)
    with torch.inference_mode():
        products_whole: list[torch.Tensor] = []
        products_blocks: list[torch.Tensor] = []
        expected = enc(x, _to_torch(normalized_adjacency(graph.adjacency)), products=products_whole)
        torch.testing.assert_close(enc(x, blocks, products=products_blocks), expected, rtol=1e-5, atol=1e-6)
    assert len(products_blocks) == len(products_whole) == (4 if alpha < 1 else 0)
    for a, b in zip(products_blocks, products_whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_trains_under_lightning_mixed_precision(small):
    # precision="bf16-mixed" is Lightning's own argument: the sparse graph products stay in float32
    # (torch has no bfloat16 sparse product, and autocast broke their backward), the rest autocasts
    model = _train(small, train={**FAST_TRAIN, "precision": "bf16-mixed"})
    z = small.obsm["X_scdsec"]
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert set(np.unique(model.predict())) <= {0, 1, 2}
    assert np.isfinite(model.history["pretrain_loss"].to_numpy(dtype=float)).all()


def test_clusters_simulated_types(monkeypatch):
    adata = scdmac.data.simulate(n_cells=600, n_genes=400, n_clusters=4, de_fraction=0.15, seed=2)
    SCDSEC.setup_anndata(adata)
    scvi.settings.seed = 0
    model = SCDSEC(adata, n_clusters=4)
    model.train(enable_progress_bar=False)  # default architecture, epochs and stopping rules
    assert adjusted_rand_score(adata.obs["cell_type"], model.predict()) > 0.8
    # the clustering stage again, from k-means (the paper's start) on the same pretrained embedding
    model.train(stages="cluster", cluster_init="kmeans", enable_progress_bar=False)
    assert model.n_clusters_ == 4 and len(np.unique(model.predict())) == 4
    assert adjusted_rand_score(adata.obs["cell_type"], model.predict()) > 0.8
    # the default Leiden start on a random sample of the cells, as on large data
    monkeypatch.setattr(scdmac.model._base, "LEIDEN_START_CELLS", 200)
    model.train(stages="cluster", enable_progress_bar=False)
    assert model.n_clusters_ == 4 and len(np.unique(model.predict())) == 4
    assert adjusted_rand_score(adata.obs["cell_type"], model.predict()) > 0.8


def test_one_liner_in_scanpy_shape(small, tmp_path, caplog):
    out = scdmac.tl.scdsec(
        small,
        3,
        layer="counts",
        key_added="sec",
        random_state=np.random.RandomState(0),  # scanpy's forms of random_state work too
        model_kwargs=SMALL_NET,
        train_kwargs={**FAST_TRAIN, "checkpoint_dir": tmp_path / "ckpt"},
        copy=True,
    )
    assert "sec_cluster" not in small.obs and "X_sec" not in small.obsm
    assert set(out.obsm) == {"X_sec", "sec_soft"} and "_scdsec_partition" not in out.obs
    assert out.uns["sec"]["params"]["model"] == "SCDSEC" and out.uns["sec"]["params"]["n_clusters"] == 3
    assert out.obsm["X_sec"].shape == (300, 10)
    assert not any("Seed set to" in r.getMessage() for r in caplog.records)
    # the recorded arguments (a tuple of widths, a path) survive writing the result to a file
    out.write_h5ad(tmp_path / "out.h5ad")
    params = ad.read_h5ad(tmp_path / "out.h5ad").uns["sec"]["params"]
    assert list(params["model_kwargs"]["hidden_widths"]) == [64, 64, 128]
    assert params["train_kwargs"]["checkpoint_dir"] == str(tmp_path / "ckpt")


def test_fixed_input_scaling_uses_whole_data_moments(small):
    SCDSEC.setup_anndata(small)
    for scaling in ("gene", "global"):
        module = SCDSEC(small, n_clusters=3, input_scaling=scaling, **SMALL_NET).module
        mean, var = scdmac.data.log_moments(small.X, module.gene_indices.numpy())
        assert_allclose(module.input_norm.mean.numpy(), mean, rtol=1e-5, atol=1e-6)
        # "gene" divides each gene by its own spread, "global" all by the root mean variance
        expected = np.sqrt(var) if scaling == "gene" else np.full_like(var, np.sqrt(var.mean()))
        assert_allclose(module.input_norm.scale.numpy(), expected, rtol=1e-5, atol=1e-6)


def test_graph_on_scaled_genes_is_used_for_new_cells_too(small):
    from scdmac.model._placement import _Reference

    plain, scaled = small.copy(), small.copy()
    SCDSEC.setup_anndata(plain, layer="counts", partition_size=64)
    SCDSEC.setup_anndata(scaled, layer="counts", partition_size=64, scale_genes=True)
    # the option changes whose neighbours a cell gets
    assert (plain.obsm["_scdsec_neighbors"] != scaled.obsm["_scdsec_neighbors"]).any()
    scvi.settings.seed = 0
    model = SCDSEC(scaled, n_clusters=3, **SMALL_NET)
    model.train(**FAST_TRAIN)
    reference = _Reference.build(model)
    assert reference.gene_scaler is not None
    assert reference.gene_scaler.scale_.shape == (len(model.module.gene_indices),)
    # training cells placed as new cells find the neighbours setup gave them, on the same scaled genes
    counts = scaled.layers["counts"]
    found = reference.neighbors_of(counts, model.module.gene_indices.numpy())
    given = scaled.obsm["_scdsec_neighbors"]
    shared = np.mean([len(set(a) & set(b)) / given.shape[1] for a, b in zip(found, given, strict=True)])
    assert shared >= 0.85
