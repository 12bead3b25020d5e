from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sklearn.metrics import adjusted_rand_score

import scdmac
from scdmac.data import (
    NeighborBatchSampler,
    adjacency,
    augment_expression,
    balanced_knn,
    knn,
    mask_with_shuffled,
    normalized_adjacency,
)
from scdmac.data._loaders import NeighborPairBatches, read_rows


def test_simulate_is_seeded_counts():
    a = scdmac.data.simulate(n_cells=200, n_genes=100, n_clusters=3, seed=4)
    b = scdmac.data.simulate(n_cells=200, n_genes=100, n_clusters=3, seed=4)
    assert a.shape == (200, 100) and sp.issparse(a.X)
    assert (a.X != b.X).nnz == 0
    assert np.array_equal(a.X.data, np.round(a.X.data)) and (a.X.data > 0).all()
    assert (np.asarray(a.X.sum(1)).ravel() > 0).all()
    assert a.obs["cell_type"].nunique() == 3
    assert (a.layers["counts"] != a.X).nnz == 0


def test_knn_excludes_self_and_finds_blobs():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 0.1, (50, 5)), rng.normal(5, 0.1, (50, 5))]).astype(np.float32)
    idx, dist = knn(X, 5)
    assert idx.shape == (100, 5) and dist.shape == (100, 5)
    assert not (idx == np.arange(100)[:, None]).any()
    assert ((idx < 50) == (np.arange(100)[:, None] < 50)).all()
    assert (np.diff(dist, axis=1) >= -1e-6).all()


def test_knn_handles_duplicate_cells():
    X = np.zeros((10, 3), dtype=np.float32)
    idx, _ = knn(X, 3)
    assert not (idx == np.arange(10)[:, None]).any()


def test_adjacency_sparse_symmetric_normalised():
    idx = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    A = adjacency(idx)
    assert sp.issparse(A) and (A != A.T).nnz == 0 and A.diagonal().sum() == 0
    N = normalized_adjacency(A)
    assert sp.issparse(N) and np.allclose(N.toarray(), N.toarray().T)
    d = np.asarray((A + sp.identity(4)).sum(1)).ravel()
    assert np.isclose(N[0, 1], 1 / np.sqrt(d[0] * d[1]))


def test_a_small_samples_padded_neighbours_are_one_edge():
    # a sample of 3 cells cannot give 5 neighbours: its last one is repeated, and must not weigh more
    X = np.random.default_rng(0).normal(size=(40, 5)).astype(np.float32)
    idx, _ = balanced_knn(X, np.array([0] * 37 + [1] * 3), 10)
    assert (idx[0] == idx[0, -1]).sum() > 1
    A = adjacency(idx)
    assert set(np.unique(A.data)) == {1.0}
    assert adjacency(idx, symmetric=False)[0].nnz == len(np.unique(idx[0]))


def test_neighbor_sampler_and_collate_pair_cells_with_neighbours():
    neighbors = np.array([[1, 2], [0, 2], [0, 1], [4, 4], [3, 3]])
    counts = sp.csr_matrix(np.arange(5, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32))
    torch.manual_seed(0)
    sampler = NeighborBatchSampler(5, batch_size=2, shuffle=True)
    batches = list(sampler)
    # 5 cells in batches of 2: the last cell joins the second batch (no batch of one cell)
    assert len(batches) == len(sampler) == 2 and sorted(len(b) for b in batches) == [2, 3]
    assert sorted(c for b in batches for c in b) == list(range(5))
    collate = NeighborPairBatches(neighbors, counts)
    for cells in batches:
        item = {"X": counts[cells].toarray(), "ind_x": np.asarray(cells)[:, None]}
        batch = collate([item])
        assert batch["X_neighbor"].shape == (len(cells), 3)
        # each cell's neighbour row is one of its kNN neighbours (row i of counts holds the value i)
        for cell, row in zip(cells, batch["X_neighbor"][:, 0].long().tolist(), strict=True):
            assert row in neighbors[cell]


def test_read_rows_keeps_order_and_repeats():
    counts = sp.csr_matrix(np.arange(12, dtype=np.float32).reshape(6, 2))
    rows = np.array([4, 1, 4, 0])
    np.testing.assert_array_equal(read_rows(counts, rows), counts.toarray()[rows])
    np.testing.assert_array_equal(read_rows(counts.toarray(), rows), counts.toarray()[rows])


def test_augmentations():
    torch.manual_seed(0)
    x = torch.rand(64, 100) + 1
    nb = torch.zeros(64, 100)
    out = augment_expression(x, nb, drop_rate=0.0, noise_var=0.0, swap_rate=0.2)
    assert 0.1 < (out == 0).float().mean() < 0.3
    out = augment_expression(x, None, drop_rate=0.1, noise_var=0.0, swap_rate=0.0)
    assert 0.05 < (out == 0).float().mean() < 0.15
    out = augment_expression(x, None, drop_rate=0.0, noise_var=0.6, swap_rate=0.0)
    assert abs((out - x).var().item() - 0.6) < 0.05
    masked, mask = mask_with_shuffled(x, 0.3)
    assert 0.25 < mask.mean() < 0.35
    assert torch.equal(masked[mask == 0], x[mask == 0])
    # a masked entry holds a value of the same gene from some cell of the batch
    same_gene = (masked.unsqueeze(0) == x.unsqueeze(1)).any(0)
    assert same_gene.all()


def test_estimate_n_clusters_on_blobs():
    rng = np.random.default_rng(1)
    centers = rng.normal(0, 10, (5, 8))
    z = np.concatenate([c + rng.normal(0, 0.5, (80, 8)) for c in centers]).astype(np.float32)
    assert scdmac.model.estimate_n_clusters(z) == 5


def test_leiden_at_k_finds_the_requested_number():
    from scdmac.model._n_clusters import leiden_at_k

    rng = np.random.default_rng(1)
    centers = rng.normal(0, 10, (5, 8))
    truth = np.repeat(np.arange(5), 80)
    z = (centers[truth] + rng.normal(0, 0.5, (400, 8))).astype(np.float32)
    assert adjusted_rand_score(truth, leiden_at_k(z, 5)) == 1.0
    assert leiden_at_k(z, 8).max() + 1 == 8  # splits blobs when asked for more
    # separate blobs cannot be merged by any resolution: the closest count comes back
    assert leiden_at_k(z, 2).max() + 1 > 2


def test_simulate_tissue_imbalance_gives_each_type_its_share():
    from scdmac.data import TISSUE_PROPORTIONS

    a = scdmac.data.simulate(n_cells=2400, n_genes=100, n_clusters=8, proportions=TISSUE_PROPORTIONS, seed=0)
    sizes = a.obs["cell_type"].value_counts().reindex(a.obs["cell_type"].cat.categories).to_numpy()
    assert sizes.tolist() == [1080, 480, 288, 192, 144, 96, 72, 48]


def test_simulate_sample_effects():
    a = scdmac.data.simulate(
        n_cells=3000, n_genes=300, n_clusters=2, n_samples=3, sample_library_sd=0.5, sample_gene_sd=0.5, seed=1
    )
    assert a.obs["sample"].cat.categories.tolist() == ["sample_0", "sample_1", "sample_2"]
    assert a.obs["sample"].value_counts().min() > 800
    # each sample has its own library size and its own profile, the same in every type
    library = np.asarray(a.X.sum(1)).ravel()
    by_sample = [np.median(library[(a.obs["sample"] == s).to_numpy()]) for s in a.obs["sample"].cat.categories]
    assert max(by_sample) / min(by_sample) > 1.2
    X = a.X.toarray()
    freq = lambda mask: X[mask].sum(0) / X[mask].sum()  # noqa: E731
    t0 = (a.obs["cell_type"] == "type_0").to_numpy()
    s0, s1 = ((a.obs["sample"] == s).to_numpy() for s in ("sample_0", "sample_1"))
    shift_t0 = np.log1p(freq(t0 & s0) * 1e4) - np.log1p(freq(t0 & s1) * 1e4)
    shift_t1 = np.log1p(freq(~t0 & s0) * 1e4) - np.log1p(freq(~t0 & s1) * 1e4)
    assert np.corrcoef(shift_t0, shift_t1)[0, 1] > 0.5
    one = scdmac.data.simulate(n_cells=100, n_genes=50, n_clusters=2, seed=1)
    assert one.obs["sample"].nunique() == 1


def test_simulate_bad_proportions():
    import pytest

    with pytest.raises(ValueError, match="one per type"):
        scdmac.data.simulate(n_cells=100, n_genes=50, n_clusters=3, proportions=[0.5, 0.5])
    with pytest.raises(ValueError, match="n_samples"):
        scdmac.data.simulate(n_cells=100, n_genes=50, n_clusters=3, n_samples=0)


# ---- what scales: the simulator, the neighbour search, the partition, the step budget -------------
def test_simulate_has_real_data_sparsity_and_does_not_depend_on_threads():
    one = scdmac.data.simulate(n_cells=3000, n_genes=2000, n_clusters=5, seed=3, chunk_size=700, n_jobs=1)
    two = scdmac.data.simulate(n_cells=3000, n_genes=2000, n_clusters=5, seed=3, chunk_size=700, n_jobs=2)
    assert (one.X != two.X).nnz == 0
    # 10x data restricted to its 2,000 most variable genes: 5-15% non-zero
    assert 0.05 <= one.X.nnz / (3000 * 2000) <= 0.15
    assert one.X.indices.dtype == np.int32 and one.X.has_sorted_indices


def test_the_conditioned_negative_binomial_has_the_law_of_its_positive_draws():
    from scdmac.data._simulate import _positive_nb

    rng = np.random.default_rng(0)
    theta = 2.0
    for mean in (0.05, 0.7, 4.0):
        draws = _positive_nb(np.full(200_000, mean), theta, rng)
        assert draws.min() >= 1
        p0 = (theta / (theta + mean)) ** theta
        # E[X | X > 0] = μ / (1 - P(0)); P(X = 1 | X > 0) = θ p0 μ/(μ+θ) / (1 - p0)
        assert abs(draws.mean() - mean / (1 - p0)) < 0.01 * mean / (1 - p0) + 0.005
        p1 = theta * p0 * mean / (mean + theta) / (1 - p0)
        assert abs((draws == 1).mean() - p1) < 0.005


def test_exact_cosine_neighbours_match_scikit_learns_cosine_search():
    from sklearn.neighbors import NearestNeighbors

    X = np.random.default_rng(1).normal(size=(400, 12)).astype(np.float32)
    idx, dist = knn(X, 10, metric="cosine", method="exact")
    ref_dist, ref_idx = NearestNeighbors(n_neighbors=11, metric="cosine", algorithm="brute").fit(X).kneighbors(X)
    assert all(set(a) == set(b[1:]) for a, b in zip(idx, ref_idx, strict=True))
    np.testing.assert_allclose(dist, ref_dist[:, 1:], atol=1e-5)


def test_tall_sparse_data_take_the_covariance_pca_with_the_same_components(monkeypatch):
    from scdmac.data import _preprocess

    counts = sp.random(3000, 60, density=0.2, format="csr", random_state=3, dtype=np.float32)
    counts.data = np.log1p(counts.data * 10)
    arpack_pcs, arpack = _preprocess.fit_pca(counts, 5, random_state=0)
    assert arpack.svd_solver == "arpack"
    monkeypatch.setattr(_preprocess, "COVARIANCE_PCA_MIN_CELLS", 1000)
    monkeypatch.setattr(_preprocess, "GRAM_BLOCK_VALUES", 60 * 700)  # several blocks, the last one short
    pcs, model = _preprocess.fit_pca(counts, 5, random_state=0)
    assert isinstance(model, _preprocess.CovariancePCA) and pcs.shape == (3000, 5) and pcs.dtype == np.float32
    # the same subspace: each component agrees with ARPACK's up to its sign, variances too
    np.testing.assert_allclose(np.abs((model.components_ * arpack.components_).sum(1)), 1, atol=1e-3)
    np.testing.assert_allclose(np.abs(pcs), np.abs(arpack_pcs), atol=1e-3 * np.abs(arpack_pcs).max())
    np.testing.assert_allclose(model.explained_variance_, arpack.explained_variance_, rtol=1e-4)
    # new rows are projected as scikit-learn would, on the same (sign-fixed) components
    new = counts[:7].toarray()
    expected = (new - np.asarray(counts.mean(axis=0))) @ model.components_.T
    np.testing.assert_allclose(model.transform(new), expected, atol=1e-4)
    np.testing.assert_allclose(model.transform(counts[:7]), expected, atol=1e-4)
    # scikit-learn's sign convention: each component's largest loading is positive
    assert (model.components_[np.arange(5), np.abs(model.components_).argmax(1)] > 0).all()
    # enough cells, but fewer than ten per gene: ARPACK again
    monkeypatch.setattr(_preprocess, "COVARIANCE_PCA_MIN_CELLS", 100)
    assert _preprocess.fit_pca(counts[:500], 5, random_state=0)[1].svd_solver == "arpack"


def test_centred_gram_matches_the_dense_covariance_for_sparse_and_dense_input(monkeypatch):
    from scdmac.data import _preprocess

    X = sp.random(500, 30, density=0.3, format="csr", random_state=5, dtype=np.float32)
    monkeypatch.setattr(_preprocess, "GRAM_BLOCK_VALUES", 30 * 64)
    dense = X.toarray().astype(np.float64)
    expected = (dense - dense.mean(0)).T @ (dense - dense.mean(0))
    for matrix in (X, dense):
        mean, gram = _preprocess.centred_gram(matrix, dtype=np.float64)
        np.testing.assert_allclose(mean, dense.mean(0), rtol=1e-6)
        np.testing.assert_allclose(gram, expected, rtol=1e-9, atol=1e-9)


def _five_directions_in_noise(n_cells: int, n_genes: int) -> np.ndarray:
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(n_cells, 5)) * np.array([12.0, 10.0, 9.0, 8.0, 7.0])
    directions = np.linalg.qr(rng.normal(size=(n_genes, 5)))[0].T
    return scores @ directions + rng.normal(size=(n_cells, n_genes))


@pytest.mark.parametrize("shape", [(600, 80), (60, 200)], ids=["tall", "wide"])
def test_signal_components_count_the_directions_above_the_noise(shape):
    from scdmac.data import signal_components

    X = _five_directions_in_noise(*shape)
    assert signal_components(X) == 5
    assert signal_components(sp.csr_matrix(X)) == 5
    assert signal_components(np.random.default_rng(5).normal(size=shape)) == 0


def test_signal_components_read_a_sample_of_large_data(monkeypatch):
    from scdmac.data import _preprocess

    X = sp.csr_matrix(_five_directions_in_noise(3000, 80))
    monkeypatch.setattr(_preprocess, "SIGNAL_SAMPLE_CELLS", 500)
    assert _preprocess.signal_components(X, random_state=0) == 5


def test_pca_above_noise_keeps_at_least_ten_and_at_most_asked_components():
    from scdmac.data._preprocess import MIN_SIGNAL_COMPONENTS, pca

    X = _five_directions_in_noise(600, 80)
    assert pca(X, 50, 0).shape == (600, 50)
    assert pca(X, 50, 0, above_noise=True).shape == (600, MIN_SIGNAL_COMPONENTS)
    assert pca(X, 8, 0, above_noise=True).shape == (600, 8)


@pytest.mark.slow  # pynndescent compiles its numba kernels in every new process (~45 s here)
def test_approximate_neighbours_find_most_exact_ones():
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(c, 1.0, (300, 8)) for c in (0, 6)]).astype(np.float32)
    exact, _ = knn(X, 10, method="exact")
    approx, _ = knn(X, 10, method="approximate", random_state=0)
    assert not (approx == np.arange(600)[:, None]).any()
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall > 0.9
    with pytest.raises(ValueError, match="method must be"):
        knn(X, 10, method="fast")


def test_many_partition_groups_are_fitted_on_a_sample_and_numbered_densely(monkeypatch):
    from scdmac.data import _graph, partition_cells

    monkeypatch.setattr(_graph, "PARTITION_SAMPLE_ABOVE", 1000)  # the path taken above 20,000 cells
    rng = np.random.default_rng(3)
    X = rng.normal(size=(6000, 5)).astype(np.float32)
    groups = partition_cells(X, 100, random_state=0)
    n_groups = groups.max() + 1
    assert set(np.unique(groups)) == set(range(n_groups)) and n_groups >= 50
    sizes = np.bincount(groups)
    assert np.median(sizes) > 50 and sizes.max() < 400
    # groups are compact: on separated blobs of a group's size, most kNN edges stay inside a group
    centres = rng.normal(size=(40, 5)) * 30
    X = (np.repeat(centres, 150, axis=0) + rng.normal(size=(6000, 5))).astype(np.float32)
    groups = partition_cells(X, 150, random_state=0)
    neighbours, _ = knn(X, 15)
    assert (groups[neighbours] == groups[:, None]).mean() > 0.9


def test_the_step_budget_holds_on_large_data():
    from scdmac.train import Stage

    stage = Stage("pretrain", ("encoder",), steps=400, epochs=(5, 200))
    # small data: full epochs, as many as the budget takes
    assert stage.default_schedule(4000, 256) == (25, None)
    # large data: the smallest number of epochs, each a random subset of the batches
    assert stage.default_schedule(1_000_000, 256) == (5, 80)
    assert stage.default_epochs(1_000_000, 256) == 5


def test_the_step_budget_holds_on_data_smaller_than_a_batch():
    from scdmac.train import Stage

    # one step an epoch: the default (no largest number of epochs) gives the whole budget
    assert Stage("pretrain", ("encoder",), steps=400).default_schedule(220, 256) == (400, None)
    assert Stage("pretrain", ("encoder",), steps=400).default_schedule(301, 256) == (200, None)
    # a stage with a largest number of epochs keeps it
    assert Stage("cluster", ("encoder",), steps=1000, epochs=(5, 100)).default_schedule(220, 256) == (100, None)


def test_genes_of_large_data_are_chosen_on_a_sample_alike_in_memory_and_on_disk(monkeypatch, tmp_path):
    import anndata as ad

    from scdmac.data import _preprocess

    adata = scdmac.data.simulate(n_cells=600, n_genes=80, n_clusters=3, seed=2)
    counts = sp.csr_matrix(adata.layers["counts"])
    monkeypatch.setattr(_preprocess, "GENE_SELECTION_CELLS", 200)
    hvg, selected = _preprocess.selected_log_expression(counts, 30, gene_min_cells=3)
    assert hvg.sum() == 30 and selected.shape == (600, 30)
    # all cells' expression over the sample's genes, computed as for the whole matrix
    np.testing.assert_allclose(selected.toarray(), _preprocess.log_normalize(counts)[:, hvg].toarray(), rtol=1e-6)
    path = tmp_path / "counts.h5ad"
    ad.AnnData(counts).write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    backed_hvg, backed_selected = _preprocess.selected_log_expression(backed.X, 30, gene_min_cells=3)
    np.testing.assert_array_equal(backed_hvg, hvg)
    np.testing.assert_allclose(backed_selected.toarray(), selected.toarray(), rtol=1e-6)
    backed.file.close()


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_the_torch_search_finds_scikit_learns_exact_neighbours(metric, monkeypatch):
    from scdmac.data import _graph

    X = np.random.default_rng(7).normal(size=(700, 9)).astype(np.float32)
    monkeypatch.setattr(_graph, "GPU_KNN_BLOCK_VALUES", 700 * 64)  # eleven blocks of query rows
    ref_idx, ref_dist = knn(X, 8, metric=metric, method="exact", device=None)
    idx, dist = knn(X, 8, metric=metric, method="exact", device="cpu")  # the GPU path's code, run on the CPU
    assert idx.dtype == np.int64 and dist.dtype == np.float32 and idx.shape == (700, 8)
    assert all(set(a) == set(b) for a, b in zip(idx, ref_idx, strict=True))
    np.testing.assert_allclose(dist, ref_dist, atol=1e-4)
    # queries of other rows, and "auto" on a device searches exactly far beyond the CPU's exact limit
    monkeypatch.setattr(_graph, "EXACT_KNN_MAX_CELLS", 100)
    index = _graph.NeighborIndex(X, metric, "auto", n_neighbors=5, device="cpu")
    assert index.exact
    np.testing.assert_array_equal(index.query(X[:20], 5)[0][:, 0], np.arange(20))


def test_the_search_stays_on_scikit_learn_without_a_gpu(monkeypatch):
    from scdmac.data import _graph

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    X = np.random.default_rng(8).normal(size=(50, 4)).astype(np.float32)
    assert _graph.NeighborIndex(X, device="auto").device is None
    assert _graph.NeighborIndex(X, device=None).device is None


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
def test_unit_variance_gives_every_gene_the_same_spread(sparse):
    from scdmac.data._preprocess import unit_variance

    rng = np.random.default_rng(0)
    X = rng.poisson(rng.gamma(1.0, 2.0, 6), (200, 6)).astype(np.float32)
    X[:, 2] = 3.0  # no variance: left as it is
    scaled, scaler = unit_variance(sp.csr_matrix(X) if sparse else X)
    scales = scaler.scale_
    assert sp.issparse(scaled) == sparse
    dense = scaled.toarray() if sparse else scaled
    varying = [0, 1, 3, 4, 5]
    np.testing.assert_allclose(dense[:, varying].std(axis=0), 1.0, rtol=1e-4)
    np.testing.assert_allclose(dense[:, 2], 3.0)
    np.testing.assert_allclose(scales[varying], X[:, varying].std(axis=0), rtol=1e-4)
    # given the training cells' scaler, new rows are divided by its deviations and not by their own spread
    again, same = unit_variance(X[:10], scaler)
    np.testing.assert_allclose(again, X[:10] / scales, rtol=1e-6)
    assert same is scaler
