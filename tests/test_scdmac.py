from __future__ import annotations

import numpy as np
import pytest
import scvi
import torch
from lightning.pytorch.callbacks import Callback
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
    # outputs are written batch by batch into one array: any batch size, a last partial batch included
    z_small_batches = trained.get_latent_representation(batch_size=64)
    assert z_small_batches.shape == z.shape and z_small_batches.dtype == np.float32
    assert_allclose(z_small_batches, z, rtol=1e-5, atol=1e-6)
    assert_allclose(trained.get_latent_representation(indices=[3, 1], batch_size=1), z[[3, 1]], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="selects none"):
        trained.get_latent_representation(indices=[])


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


def test_trains_under_lightning_mixed_precision(small):
    # Lightning's precision="bf16-mixed": the embedding's running statistics stay float32
    scvi.settings.seed = 0
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3)
    model.train(**FAST_TRAIN, precision="bf16-mixed")
    z = small.obsm["X_scdmac"]
    assert z.dtype == np.float32 and np.isfinite(z).all()
    assert set(np.unique(model.predict())) <= {0, 1, 2}
    assert model.module.input_norm.running_mean.dtype == torch.float32


def test_same_seed_same_labels(small):
    runs = []
    for _ in range(2):
        adata = small.copy()
        scvi.settings.seed = 3  # before setup: its PCA takes the seed too
        SCDMAC.setup_anndata(adata)
        model = SCDMAC(adata, n_clusters=3)
        model.train(**FAST_TRAIN)
        runs.append(model.predict())
    assert (runs[0] == runs[1]).all()


def test_training_leaves_global_settings_alone(small):
    SCDMAC.setup_anndata(small)
    scvi.settings.seed = 5
    threads, dtype = torch.get_num_threads(), torch.get_default_dtype()
    SCDMAC(small, n_clusters=3).train(**FAST_TRAIN)
    assert scvi.settings.seed == 5
    assert torch.get_num_threads() == threads and torch.get_default_dtype() == dtype


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


def test_ablation_switches_take_effect(small):
    SCDMAC.setup_anndata(small)
    scvi.settings.seed = 0
    full = SCDMAC(small, n_clusters=3)
    full.train(**FAST_TRAIN)
    assert full.module.denoiser is not None and full.module.masked_ae.mask_predictor is not None
    assert full.module.masked_weight == 0.7 and full.module.cluster_head.metric == "cosine"

    no_denoise = SCDMAC(small, n_clusters=3, denoise=False)
    no_denoise.train(**FAST_TRAIN)
    assert no_denoise.module.denoiser is None
    assert not any(k.startswith("denoise") for k in no_denoise.history)
    with pytest.raises(ValueError, match="no denoiser"):
        no_denoise.get_denoised_expression()
    with pytest.raises(ValueError, match="Unknown stage"):
        no_denoise.train(stages="denoise")

    no_predictor = SCDMAC(small, n_clusters=3, mask_predictor=False)
    no_predictor.train(**FAST_TRAIN)
    assert no_predictor.module.masked_ae.mask_predictor is None
    assert "mask_mask_bce" in full.history and "mask_mask_bce" not in no_predictor.history

    # equal weights on masked and kept entries; the papers' Euclidean head
    assert SCDMAC(small, n_clusters=3, weighted_reconstruction=False).module.masked_weight == 0.5
    euclid = SCDMAC(small, n_clusters=3, cluster_metric="euclidean")
    euclid.train(**FAST_TRAIN)
    assert euclid.module.cluster_head.metric == "euclidean" and euclid.module.cluster_head.radius.item() == 1.0
    for model in (no_denoise, no_predictor, euclid):
        assert model.predict().shape == (300,)


def test_depth_decoder_reads_depth_and_denoises_at_the_median(small, tmp_path):
    SCDMAC.setup_anndata(small)
    scvi.settings.seed = 0
    model = SCDMAC(small, n_clusters=3, depth_decoder=True)
    model.train(**FAST_TRAIN)
    denoiser = model.module.denoiser
    assert denoiser.depth_input and denoiser.decoder[0].fc_layers[0][0].in_features == 64 + 1  # bottleneck, depth
    x = torch.as_tensor(small.X[:20].toarray(), dtype=torch.float32)
    with torch.inference_mode():
        model.module.eval()
        _, size_factor, x_log = model.module.split_counts(x)
        h = denoiser.encode(x_log)
        shallow, deep = denoiser.decode(h, size_factor / 4), denoiser.decode(h, size_factor * 4)
        # the decoder reads the depth: the same bottleneck decodes to another profile at another depth
        assert not torch.allclose(shallow["scale"], deep["scale"])
        # the denoised expression is every cell's profile decoded at the median library
        at_median = denoiser.decode(h, torch.ones_like(size_factor))["scale"]
        assert torch.allclose(model.module.denoised_scale(x), at_median)
    model.save(tmp_path / "m")
    loaded = SCDMAC.load(tmp_path / "m", adata=small)
    assert loaded.module.denoiser.depth_input
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-5)


def test_gene_input_scaling_weighs_genes_by_their_log_spread(small, tmp_path):
    SCDMAC.setup_anndata(small)
    scvi.settings.seed = 0
    model = SCDMAC(small, n_clusters=3, input_scaling="gene")
    scaling = model.module.gene_scaling
    genes = model.module.gene_indices
    mean, var = scdmac.data.log_moments(small.X, genes)
    assert_allclose(scaling.mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    assert_allclose(scaling.scale.numpy(), np.sqrt(var), rtol=1e-5, atol=1e-6)
    assert SCDMAC(small, n_clusters=3).module.gene_scaling is None  # the default weighs genes as PCA does
    model.train(enable_progress_bar=False)  # default epochs and stopping rules
    assert adjusted_rand_score(small.obs["cell_type"], model.predict()) > 0.9
    model.save(tmp_path / "m")
    loaded = SCDMAC.load(tmp_path / "m", adata=small)
    assert loaded.module.gene_scaling is not None
    assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-5)
    with pytest.raises(ValueError, match="input_scaling must be"):
        SCDMAC(small, n_clusters=3, input_scaling="pca")


def test_joint_zinb_weight_trains_the_denoiser(small):
    SCDMAC.setup_anndata(small)
    scvi.settings.seed = 0
    for weight in (0.0, 0.5):
        model = SCDMAC(small, n_clusters=3, zinb_weight=weight)
        model.train(stages=["denoise", "mask"], **FAST_TRAIN)
        before = {k: v.clone() for k, v in model.module.denoiser.state_dict().items()}
        model.train(stages="cluster", **FAST_TRAIN)
        after = model.module.denoiser.state_dict()
        changed = any(not torch.equal(before[k], after[k]) for k in before)
        assert changed == (weight > 0)
        assert ("cluster_zinb" in model.history) == (weight > 0)


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


def test_one_liner_in_scanpy_shape(small):
    import os
    import random

    before = set(small.obs), set(small.obsm), set(small.var), set(small.uns)
    scvi.settings.seed = 11
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    env = os.environ.get("PL_GLOBAL_SEED")
    assert scdmac.tl.scdmac(small, 3, layer="counts", train_kwargs=FAST_TRAIN) is None
    # only the results are added: no registry, graph or gene-selection keys
    assert set(small.obs) - before[0] == {"scdmac_cluster"}
    assert set(small.obsm) - before[1] == {"X_scdmac", "scdmac_soft"}
    assert set(small.var) == before[2] and set(small.uns) - before[3] == {"scdmac"}
    assert_results_written(small, "scdmac", n_latent=16, n_clusters=3, extra_obsm=set())
    params = small.uns["scdmac"]["params"]
    assert params["n_clusters"] == 3 and params["layer"] == "counts" and params["random_state"] == 0
    # no global state changed: the seed was passed, not set
    assert scvi.settings.seed == 11 and os.environ.get("PL_GLOBAL_SEED") == env
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == python_state
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state()[1:2], numpy_state[1:2], strict=True))

    # the same random_state gives the same labels; copy=True leaves the input alone
    out = scdmac.tl.scdmac(small, 3, layer="counts", key_added="again", train_kwargs=FAST_TRAIN, copy=True)
    assert "again_cluster" in out.obs and "again_cluster" not in small.obs
    assert (out.obs["again_cluster"].to_numpy() == small.obs["scdmac_cluster"].to_numpy()).all()
    with pytest.raises(ValueError, match="key_added"):
        scdmac.tl.scdmac(small, 3, layer="counts", model_kwargs={"cluster_key": "k"})


def test_plan_kwargs_reach_their_plans(small):
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3)
    seen = []

    class Record(Callback):
        def on_train_start(self, trainer, pl_module):
            adam = trainer.optimizers[0].param_groups[0]
            interval = getattr(pl_module, "update_interval", None)
            seen.append((pl_module.stage.name, adam["weight_decay"], adam["eps"], interval))

    model.train(
        plan_kwargs={"weight_decay": 1e-4, "eps": 1e-6, "update_interval": 2}, callbacks=[Record()], **FAST_TRAIN
    )
    # every plan's Adam takes weight_decay and eps; only the clustering plan has an update interval
    assert seen == [("denoise", 1e-4, 1e-6, None), ("mask", 1e-4, 1e-6, None), ("cluster", 1e-4, 1e-6, 2)]
    # refreshes every second epoch: two epochs give one logged label change
    assert len(model.history["cluster_label_change"]) == 1


def test_the_plateau_rule_ends_a_stage_only_after_its_step_budget(small):
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3)
    # no epoch can improve by 100%: the rule would stop each stage at once, but not before its budget
    # (12 steps, 6 epochs of two batches of 150 cells), and then at the next epoch it may
    model.train(
        stages=["denoise", "mask"],
        stage_steps={"denoise": 12, "mask": 12},
        max_epochs=40,
        early_stopping_rel_delta=1.0,
        early_stopping_patience=2,
        batch_size=150,
        enable_progress_bar=False,
    )
    assert len(model.history["denoise_loss"]) == 6
    assert len(model.history["mask_loss"]) == 6
    # without the rule, max_epochs holds
    model.train(stages="mask", max_epochs=8, early_stopping=False, batch_size=150, enable_progress_bar=False)
    assert len(model.history["mask_loss"]) == 6 + 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size must be an integer of at least 2"),
        ({"batch_size": -3}, "batch_size must be an integer of at least 2"),
        ({"batch_size": 1}, "batch_size must be an integer of at least 2"),
        ({"batch_size": 2.5}, "batch_size must be an integer of at least 2"),
        ({"max_epochs": 0}, "max_epochs must be an integer of at least 1"),
        ({"stages": []}, "trains nothing"),
        ({"kmeans_n_init": 0}, "kmeans_n_init"),
        ({"plan_kwargs": {"update_intervall": 2}}, "Unknown plan_kwargs"),
        ({"stage_steps": {"warmup": 10}}, "stage_steps names"),
        ({"early_stopping_patience": 0}, "patience"),
    ],
)
def test_bad_train_arguments_are_refused_before_training(small, kwargs, match):
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3)
    with pytest.raises(ValueError, match=match):
        model.train(**{**FAST_TRAIN, **kwargs})
    assert model.history is None or "denoise_loss" not in model.history


def test_stage_steps_set_the_default_budget(small):
    SCDMAC.setup_anndata(small)
    model = SCDMAC(small, n_clusters=3)
    # 300 cells in batches of 128: 3 steps an epoch; 30 steps of denoising are 10 epochs (the plateau
    # stop never acts before its patience of 10 epochs), not the default 400 steps' 133
    model.train(stages="denoise", stage_steps={"denoise": 30}, batch_size=128, enable_progress_bar=False)
    assert len(model.history["denoise_loss"]) == 10
    assert [s.name for s in model.stages] == ["denoise", "mask", "cluster"]


def test_view_anndata_setup(trained, capsys):
    trained.view_anndata_setup()
    shown = capsys.readouterr().out
    assert "_scdmac_neighbors" in shown and "Summary Stat" in shown
