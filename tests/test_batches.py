"""Minibatches with named inputs (samplers, collates) and the staged plans and module losses they feed."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch

import scdmac
from scdmac._constants import BATCH_KEYS
from scdmac.data import CellDataModule, CellGraph, DeviceCounts, PartitionBatchSampler
from scdmac.data import _loaders as loaders
from scdmac.data._loaders import cell_loader
from scdmac.model import SCDMAC, SCDSEC
from scdmac.train import Stage, StagePlan


def test_partition_sampler_deals_whole_groups():
    partitions = np.repeat(np.arange(6), [5, 5, 4, 6, 5, 5])  # 30 cells in 6 groups
    torch.manual_seed(0)
    sampler = PartitionBatchSampler(partitions, batch_size=10, shuffle=True)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    seen = [c for b in batches for c in b]
    assert sorted(seen) == list(range(30))  # every cell once per epoch
    for batch in batches:
        groups = set(partitions[batch])
        # a group is never split between batches
        assert sum((partitions == g).sum() for g in groups) == len(batch)


def test_samplers_split_batches_across_ranks(monkeypatch):
    partitions = np.repeat(np.arange(8), 4)
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(loaders, "_world", lambda rank=rank: (2, rank))
        torch.manual_seed(0)  # every rank draws the same order
        sampler = PartitionBatchSampler(partitions, batch_size=4, shuffle=True)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 4
        seen += [c for b in batches for c in b]
    assert sorted(seen) == list(range(32))  # the ranks share the epoch without overlap


@pytest.fixture
def registered(small):
    SCDMAC.setup_anndata(small, layer="counts")
    return SCDMAC(small, n_clusters=3)


def test_cell_batches_hold_counts_and_row_numbers(registered):
    batch = next(iter(cell_loader(registered.adata_manager, 50, "cells")))
    assert set(batch) == {BATCH_KEYS.X, BATCH_KEYS.INDEX}
    assert batch[BATCH_KEYS.X].shape == (50, registered.adata.n_vars)
    assert batch[BATCH_KEYS.INDEX].dtype == torch.int64
    counts = registered.adata.layers["counts"][batch[BATCH_KEYS.INDEX].numpy()].toarray()
    np.testing.assert_array_equal(batch[BATCH_KEYS.X].numpy(), counts)


def test_neighbor_pair_batches_pair_each_cell_with_a_neighbour(registered):
    neighbors = registered._neighbors()
    loader = cell_loader(registered.adata_manager, 40, "neighbor_pairs", shuffle=True, neighbors=neighbors)
    batch = next(iter(loader))
    assert set(batch) == {BATCH_KEYS.X, BATCH_KEYS.X_NEIGHBOR, BATCH_KEYS.INDEX}
    assert batch[BATCH_KEYS.X].shape == batch[BATCH_KEYS.X_NEIGHBOR].shape == (40, registered.adata.n_vars)
    counts = registered.adata.layers["counts"]
    for cell, row in zip(batch[BATCH_KEYS.INDEX].numpy(), batch[BATCH_KEYS.X_NEIGHBOR].numpy(), strict=True):
        assert any(np.array_equal(counts[n].toarray().ravel(), row) for n in neighbors[cell])


def test_subgraph_batches_carry_their_induced_graph(small):
    SCDSEC.setup_anndata(small, partition_size=50)
    model = SCDSEC(small, n_clusters=3)
    inputs = model._batch_inputs("subgraphs")
    batch = next(iter(cell_loader(model.adata_manager, 100, "subgraphs", shuffle=True, **inputs)))
    assert set(batch) == {BATCH_KEYS.X, BATCH_KEYS.INDEX, BATCH_KEYS.ADJ, BATCH_KEYS.EDGES}
    cells = batch[BATCH_KEYS.INDEX].numpy()
    expected = inputs["graph"].subgraph(cells)
    torch.testing.assert_close(batch[BATCH_KEYS.ADJ].to_dense(), expected["adj"].to_dense())
    torch.testing.assert_close(batch[BATCH_KEYS.EDGES], expected["edges"])
    # an edge of the batch is an edge of the whole graph
    i, j = batch[BATCH_KEYS.EDGES][:, 0].tolist()
    assert model._cell_graph().adjacency[cells[i], cells[j]] == 1


def test_batch_kinds_need_their_inputs(registered):
    with pytest.raises(ValueError, match="neighbour"):
        cell_loader(registered.adata_manager, 10, "neighbor_pairs")
    with pytest.raises(ValueError, match="partitions"):
        cell_loader(registered.adata_manager, 10, "subgraphs", graph=CellGraph(registered._neighbors()))
    with pytest.raises(ValueError, match="batches must be"):
        cell_loader(registered.adata_manager, 10, "pairs")


def test_module_loss_is_scvi_tools_forward_with_per_cell_terms(registered):
    module = registered.module
    batch = next(iter(cell_loader(registered.adata_manager, 32, "neighbor_pairs", neighbors=registered._neighbors())))
    inference, generative, out = module(batch, inference_kwargs={"stage": "denoise"}, loss_kwargs={"stage": "denoise"})
    assert set(generative) == {"zinb"} and "z" not in inference  # the denoise stage runs the denoiser only
    assert out.reconstruction_loss["zinb"].shape == (32,)
    torch.testing.assert_close(out.loss, out.reconstruction_loss["zinb"].mean())
    _, generative, out = module(batch, inference_kwargs={"stage": "mask"}, loss_kwargs={"stage": "mask"})
    assert set(generative) == {"masked"} and out.reconstruction_loss["mask"].shape == (32,)
    with pytest.raises(ValueError, match="Unknown stage"):
        module(batch, inference_kwargs={"stage": "warmup"}, loss_kwargs={"stage": "warmup"})


def test_clustering_loss_weighs_its_terms(trained):
    module = trained.module
    batch = next(iter(cell_loader(trained.adata_manager, 64, "cells")))
    target = torch.full((64, 3), 1 / 3)
    module.eval()
    torch.manual_seed(0)
    _, _, out = module(batch, inference_kwargs={"stage": "cluster"}, loss_kwargs={"stage": "cluster", "target": target})
    terms = out.extra_metrics
    weights = module.stage_weights["cluster"]
    expected = weights["kl"] * terms["kl"] + weights["kmeans"] * terms["kmeans"] + weights["mask"] * terms["mask"]
    torch.testing.assert_close(out.loss, expected)
    assert out.kl_local["kl"].shape == (64,) and "zinb" not in terms  # a = 0: the ZINB term is not computed
    module.train()


def test_a_stage_trains_only_its_parts(small):
    SCDMAC.setup_anndata(small, layer="counts")
    scvi.settings.seed = 0
    model = SCDMAC(small, n_clusters=3)
    masked_before = {k: v.clone() for k, v in model.module.masked_ae.state_dict().items()}
    denoiser_before = {k: v.clone() for k, v in model.module.denoiser.state_dict().items()}
    model.train(stages="denoise", max_epochs=1, enable_progress_bar=False)
    for key, value in model.module.masked_ae.state_dict().items():
        assert torch.equal(value, masked_before[key])  # neither optimised nor its running statistics moved
    assert any(not torch.equal(v, denoiser_before[k]) for k, v in model.module.denoiser.state_dict().items())
    plan = StagePlan(model.module, Stage("mask", ("masked_ae", "input_norm")))
    plan.set_stage_mode()
    assert model.module.masked_ae.training and model.module.input_norm.training
    assert not model.module.denoiser.training  # a fixed input transform: no dropout
    optimised = {id(p) for group in plan.configure_optimizers().param_groups for p in group["params"]}
    assert optimised == {id(p) for p in model.module.masked_ae.parameters()}
    # frozen parts compute no gradients during the stage (and DDP sees only the stage's parameters)
    assert not any(p.requires_grad for p in model.module.denoiser.parameters())
    assert all(p.requires_grad for p in model.module.masked_ae.parameters())
    plan.release_parts()
    assert all(p.requires_grad for p in model.module.parameters())
    # a finished train() gives every parameter its gradient back
    model.train(stages="mask", max_epochs=1, enable_progress_bar=False)
    assert all(p.requires_grad for p in model.module.parameters())


def test_loaded_centres_take_their_number_from_the_weights():
    head = scdmac.module.ClusterHead(4, 3)
    head.reset(torch.randn(4, 3))
    empty = scdmac.module.ClusterHead(0, 3)
    empty.load_state_dict(head.state_dict())
    assert empty.n_clusters == 4
    torch.testing.assert_close(empty.centers, head.centers)


# ---- counts read on the training device -------------------------------------------------------------
def test_device_counts_cut_the_same_rows_as_scipy():
    rng = np.random.default_rng(0)
    dense = rng.poisson(0.3, (60, 25)).astype(np.int64)
    rows = torch.tensor([5, 3, 3, 59, 0, 17])
    for matrix in (sp.csr_matrix(dense), sp.csc_matrix(dense), dense):
        counts = DeviceCounts(matrix)
        cut = counts.rows(rows)
        assert cut.dtype == torch.float32 and cut.shape == (6, 25)
        np.testing.assert_array_equal(cut.numpy(), dense[rows.numpy()])
    assert DeviceCounts(dense).nbytes == 8 * np.count_nonzero(dense) + 8 * 61
    assert not DeviceCounts(dense).fits("cpu")  # "auto" moves counts to a GPU only


def test_device_counts_never_change_the_users_matrix():
    # duplicate entries are summed in a copy, not in the AnnData's matrix
    matrix = sp.csr_matrix((np.array([1.0, 2.0, 4.0]), np.array([1, 1, 0]), np.array([0, 2, 3])), shape=(2, 3))
    before = (matrix.data.copy(), matrix.indices.copy())
    cut = DeviceCounts(matrix).rows(torch.tensor([0, 1]))
    np.testing.assert_array_equal(cut.numpy(), [[0, 3, 0], [4, 0, 0]])
    np.testing.assert_array_equal(matrix.data, before[0])
    np.testing.assert_array_equal(matrix.indices, before[1])


def test_a_loader_leaving_counts_to_the_device_gives_the_same_batches(registered):
    neighbors = registered._neighbors()
    counts = registered.adata_manager.get_from_registry("X")
    batches = []
    for read_counts in (True, False):
        torch.manual_seed(0)
        loader = cell_loader(
            registered.adata_manager, 40, "neighbor_pairs", shuffle=True, neighbors=neighbors, read_counts=read_counts
        )
        batches.append(list(loader))
    data = CellDataModule(registered.adata_manager, 40, device_counts=DeviceCounts(counts), counts_on_device=True)
    for read, left in zip(*batches, strict=True):
        assert set(left) == {BATCH_KEYS.INDEX, BATCH_KEYS.NEIGHBOR_INDEX}
        cut = data.on_after_batch_transfer(dict(left), 0)
        assert set(cut) == set(read)
        for key in read:
            torch.testing.assert_close(cut[key], read[key])


@pytest.mark.parametrize("model_cls", [SCDMAC, SCDSEC])
def test_training_with_counts_on_the_device_gives_the_same_model(small, model_cls):
    results = []
    for on_device in (False, True):
        adata = small.copy()
        model_cls.setup_anndata(adata)
        scvi.settings.seed = 0
        model = model_cls(adata, n_clusters=3)
        steps = {s.name: 20 for s in model.stages}
        model.train(enable_progress_bar=False, counts_on_device=on_device, stage_steps=steps)
        results.append((model.predict(), model.get_latent_representation()))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_counts_on_device_is_checked_before_training(registered, tmp_path):
    with pytest.raises(ValueError, match="counts_on_device must be"):
        registered.train(counts_on_device="gpu")
    path = tmp_path / "counts.h5ad"
    registered.adata.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    SCDMAC.setup_anndata(backed)
    with pytest.raises(ValueError, match="backed on disk"):
        SCDMAC(backed, n_clusters=3).train(counts_on_device=True)
    backed.file.close()
