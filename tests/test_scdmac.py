from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from numpy.testing import assert_allclose
from sklearn.metrics import adjusted_rand_score

import scdmac
from scdmac.model import SCDMAC

from .conftest import FAST_TRAIN, assert_results_written


def test_results_written_with_documented_keys(trained):
    adata = trained.adata
    assert adata.n_obs == 300
    assert_results_written(adata, "scdmac", n_latent=16, n_clusters=3)
    assert "scdmac_hvg" in adata.var and "_scdmac_indices" in adata.obs


def test_predict_and_latent(trained):
    z = trained.get_latent_representation()
    hard = trained.predict()
    soft = trained.predict(soft=True)
    assert z.shape == (300, 16)
    assert hard.shape == (300,) and hard.min() >= 0 and hard.max() < 3
    assert soft.shape == (300, 3) and (soft >= 0).all()
    assert_allclose(soft.sum(1), 1.0, atol=1e-5)
    assert (soft.argmax(1) == hard).all()
    assert (trained.predict(indices=[0, 5, 7]) == hard[[0, 5, 7]]).all()


def test_history_has_every_stage(trained):
    for key in ("denoise_loss", "mask_loss", "cluster_loss", "cluster_kl", "cluster_label_change"):
        assert key in trained.history
        assert np.isfinite(trained.history[key].to_numpy(dtype=float)).all()


def test_repr(trained):
    text = repr(trained)
    assert "SCDMAC" in text and "n_clusters=3" in text


def test_save_load_roundtrip(trained, tmp_path):
    trained.save(tmp_path / "m", overwrite=True)
    loaded = SCDMAC.load(tmp_path / "m", adata=trained.adata)
    assert_allclose(loaded.get_latent_representation(), trained.get_latent_representation(), atol=1e-5)
    assert (loaded.predict() == trained.predict()).all()
    assert loaded.n_clusters_ == 3
    # clusters live on a sphere whose radius was fitted to the pretrained embedding and saved
    head = loaded.module.cluster_head
    assert head.metric == "cosine" and head.radius.item() != 1.0
    assert head.radius.item() == trained.module.cluster_head.radius.item()


def test_denoised_expression(trained):
    expr = trained.get_denoised_expression()
    genes = trained.adata.var_names[trained.adata.var["scdmac_hvg"]]
    assert expr.shape == (300, len(genes)) and list(expr.columns) == list(genes)
    assert (expr.to_numpy() > 0).all() and np.isfinite(expr.to_numpy()).all()


def test_user_data_untouched(small):
    X = small.X.copy()
    counts = small.layers["counts"].copy()
    obs_cols, var_cols = set(small.obs), set(small.var)
    SCDMAC.setup_anndata(small, layer="counts")
    scvi.settings.seed = 0
    SCDMAC(small, n_clusters=3).train(**FAST_TRAIN)
    assert (small.X != X).nnz == 0
    assert (small.layers["counts"] != counts).nnz == 0
    assert set(small.obs) - obs_cols == {"_scdmac_indices", "scdmac_cluster"}
    assert set(small.var) - var_cols == {"scdmac_hvg"}


def test_same_seed_same_labels(small):
    runs = []
    for _ in range(2):
        adata = small.copy()
        SCDMAC.setup_anndata(adata)
        scvi.settings.seed = 3
        model = SCDMAC(adata, n_clusters=3)
        model.train(**FAST_TRAIN)
        runs.append(model.predict())
    assert (runs[0] == runs[1]).all()


def test_no_global_side_effects(small):
    dtype = torch.get_default_dtype()
    SCDMAC.setup_anndata(small)
    SCDMAC(small, n_clusters=3).train(**FAST_TRAIN)
    assert torch.get_default_dtype() == dtype


def test_n_clusters_estimated_and_saved(small, tmp_path):
    SCDMAC.setup_anndata(small)
    scvi.settings.seed = 0
    model = SCDMAC(small)
    model.train(**FAST_TRAIN)
    k = model.n_clusters_
    assert 2 <= k <= 12
    assert model.predict(soft=True).shape[1] == k
    model.save(tmp_path / "m")
    loaded = SCDMAC.load(tmp_path / "m", adata=small)
    assert loaded.n_clusters_ == k and loaded.predict(soft=True).shape[1] == k


@pytest.mark.parametrize(
    "switches",
    [
        {"denoise": False},
        {"mask_predictor": False},
        {"weighted_reconstruction": False},
        {"cluster_metric": "euclidean"},
    ],
)
def test_ablations_train(small, switches):
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3, **switches)
    model.train(**FAST_TRAIN)
    assert model.predict().shape == (300,)
    assert model.module.cluster_head.metric == switches.get("cluster_metric", "cosine")
    stages = {k.split("_")[0] for k in model.history}
    assert ("denoise" in stages) == switches.get("denoise", True)


def test_single_stage_rerun(small):
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3)
    model.train(stages=["denoise", "mask"], **FAST_TRAIN)
    assert "scdmac_cluster" not in small.obs
    with pytest.raises(RuntimeError, match="no clusters yet"):
        model.predict()
    model.train(stages="cluster", **FAST_TRAIN)
    n = len(model.history["cluster_loss"])
    model.train(stages="cluster", **FAST_TRAIN)
    assert len(model.history["cluster_loss"]) > n
    assert "scdmac_cluster" in small.obs
    with pytest.raises(ValueError, match="Unknown stage"):
        model.train(stages="warmup")


def test_unregistered_anndata(small):
    with pytest.raises(ValueError):
        SCDMAC(small)


def test_clusters_simulated_types():
    adata = scdmac.data.simulate(n_cells=600, n_genes=400, n_clusters=4, de_fraction=0.15, seed=2)
    SCDMAC.setup_anndata(adata)
    scvi.settings.seed = 0
    model = SCDMAC(adata, n_clusters=4)
    model.train(enable_progress_bar=False)  # default epochs and stopping rules
    assert adjusted_rand_score(adata.obs["cell_type"], model.predict()) > 0.8
    # the clustering stage again, from the Leiden communities of the same pretrained embedding
    model.train(stages="cluster", cluster_init="leiden", enable_progress_bar=False)
    assert model.n_clusters_ == 4 and len(np.unique(model.predict())) == 4
    assert adjusted_rand_score(adata.obs["cell_type"], model.predict()) > 0.8


def test_one_liner(small):
    scdmac.tl.scdmac(small, n_clusters=3, layer="counts", train_kwargs=FAST_TRAIN)
    assert "X_scdmac" in small.obsm and "scdmac_cluster" in small.obs
    copy, model = scdmac.tl.scdmac(
        small, n_clusters=3, train_kwargs=FAST_TRAIN, model_kwargs={"cluster_key": "k"}, copy=True
    )
    assert "k" in copy.obs and "k" not in small.obs


def test_plan_kwargs_reach_their_plans(small):
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3)
    model.train(plan_kwargs={"weight_decay": 1e-4, "update_interval": 2}, **FAST_TRAIN)
    # refreshes every second epoch: two epochs give one logged label change
    assert len(model.history["cluster_label_change"]) == 1
