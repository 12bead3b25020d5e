"""Regression tests of inputs that once crashed inside a library, gave silent wrong results or changed the data."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
import torch
from lightning.pytorch.callbacks import Callback
from sklearn.metrics import adjusted_rand_score

import scdmac
from scdmac._constants import BATCH_KEYS
from scdmac.data import NeighborBatchSampler, cell_loader
from scdmac.model import SCDMAC, SCDSEC

from .conftest import FAST_TRAIN

ONE_EPOCH = {**FAST_TRAIN, "max_epochs": 1}
#: long enough for the clusters of the small data to settle, so two runs can be compared
BACKED_TRAIN = {**FAST_TRAIN, "max_epochs": 15}


# ---- minibatches never hold one cell ----------------------------------------------------------------
@pytest.mark.parametrize(("n_obs", "sizes"), [(257, [257]), (513, [256, 257]), (512, [256, 256]), (258, [256, 2])])
def test_a_last_batch_of_one_cell_joins_the_one_before(n_obs, sizes):
    batches = list(NeighborBatchSampler(n_obs, 256, shuffle=True))
    assert sorted(len(b) for b in batches) == sorted(sizes) and len(batches) == len(NeighborBatchSampler(n_obs, 256))
    assert sorted(c for b in batches for c in b) == list(range(n_obs))


def test_257_cells_train_with_the_default_batch_size():
    adata = scdmac.data.simulate(n_cells=257, n_genes=60, n_clusters=3, seed=0)
    SCDMAC.setup_anndata(adata)
    SCDMAC(adata, n_clusters=3).train(max_epochs=1, enable_progress_bar=False)
    assert adata.obs["scdmac_cluster"].shape == (257,)


# ---- gene selections a model cannot learn from ------------------------------------------------------
@pytest.mark.parametrize(
    ("setup", "match"),
    [({"n_top_genes": 1}, "n_top_genes must be an integer of at least 2"), ({"n_pcs": 0}, "n_pcs must be")],
)
def test_bad_setup_numbers(small, setup, match):
    with pytest.raises(ValueError, match=match):
        SCDMAC.setup_anndata(small, **setup)


def test_one_detected_gene_is_refused(small):
    one = small[:, :3].copy()
    one.X = sp.csr_matrix(np.c_[np.ones(300), np.zeros((300, 2))])
    with pytest.raises(ValueError, match="Only 1 gene"):
        SCDMAC.setup_anndata(one)


@pytest.mark.parametrize("model_cls", [SCDMAC, SCDSEC])
def test_identical_cells_are_refused(small, model_cls):
    same = small.copy()
    same.X = sp.csr_matrix(np.tile(small.X[0].toarray(), (300, 1)))
    with pytest.raises(ValueError, match="same normalised expression"):
        model_cls.setup_anndata(same)


def test_the_variation_check_reads_sparse_matrices_with_repeated_entries_as_their_sums():
    from scdmac.data._validate import check_modelled_genes

    # two cells whose gene 0 is 2.0 each: once stored as 1.0 + 1.0 (not canonical), once as 2.0
    repeated = sp.csr_matrix(
        (np.array([1.0, 1.0, 2.0, 1.0]), np.array([0, 0, 0, 1]), np.array([0, 2, 4])), shape=(2, 2)
    )
    assert not repeated.has_canonical_format
    check_modelled_genes(repeated, 2)  # gene 1 varies: accepted
    same = sp.csr_matrix((np.array([1.0, 1.0, 2.0]), np.array([0, 0, 0]), np.array([0, 2, 3])), shape=(2, 2))
    with pytest.raises(ValueError, match="same normalised expression"):
        check_modelled_genes(same, 2)
    assert not same.has_canonical_format  # the caller's matrix is left as it was


# ---- backed files -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model_cls", [SCDMAC, SCDSEC])
def test_a_backed_x_trains_from_the_file_like_in_memory_data(small, tmp_path, model_cls):
    path = tmp_path / "counts.h5ad"
    small.write_h5ad(path)
    before = path.read_bytes()
    backed = ad.read_h5ad(path, backed="r")
    memory = ad.read_h5ad(path)
    for adata in (memory, backed):
        scvi.settings.seed = 0
        model_cls.setup_anndata(adata)
    # setup reads the file in blocks, to the same genes and graph as from memory
    prefix = model_cls._prefix
    np.testing.assert_array_equal(backed.var[f"{prefix}_hvg"], memory.var[f"{prefix}_hvg"])
    np.testing.assert_array_equal(backed.obsm[f"_{prefix}_neighbors"], memory.obsm[f"_{prefix}_neighbors"])
    # training reads each minibatch's rows (and their neighbours') from the file
    model = model_cls(backed, n_clusters=3)
    model.train(enable_progress_bar=False, batch_size=128)
    assert adjusted_rand_score(small.obs["cell_type"], model.predict()) > 0.9
    backed.file.close()
    assert path.read_bytes() == before  # the file on disk is never written


def test_backed_and_in_memory_loaders_give_the_same_batches(small, tmp_path):
    path = tmp_path / "counts.h5ad"
    small.write_h5ad(path)
    backed, memory = ad.read_h5ad(path, backed="r"), ad.read_h5ad(path)
    batches = []
    for adata in (memory, backed):
        SCDMAC.setup_anndata(adata)
        model = SCDMAC(adata, n_clusters=3)
        torch.manual_seed(0)
        loader = cell_loader(model.adata_manager, 64, "neighbor_pairs", shuffle=True, neighbors=model._neighbors())
        batches.append(list(loader))
    for from_memory, from_file in zip(*batches, strict=True):
        # a backed read returns the batch's rows sorted by position: compare cell by cell
        order_m, order_f = (np.argsort(b[BATCH_KEYS.INDEX].numpy()) for b in (from_memory, from_file))
        for key in (BATCH_KEYS.INDEX, BATCH_KEYS.X):
            np.testing.assert_array_equal(from_memory[key][order_m], from_file[key][order_f])
        # the neighbour draws follow the batch order; each is a kNN neighbour of its own cell
        for b in (from_memory, from_file):
            for cell, row in zip(b[BATCH_KEYS.INDEX].numpy(), b[BATCH_KEYS.X_NEIGHBOR].numpy(), strict=True):
                assert any(np.array_equal(row, memory.X[n].toarray().ravel()) for n in model._neighbors()[cell])
    backed.file.close()


def test_a_backed_counts_check_names_the_rows(small, tmp_path):
    bad = small.copy()
    bad.X = bad.X.tocsr()
    bad.X.data[-1] = 0.5  # a non-integer in the last cell
    path = tmp_path / "bad.h5ad"
    bad.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(ValueError, match=r"adata.X \(rows 0 to 299\) contains non-integer values"):
        SCDMAC.setup_anndata(backed)
    backed.file.close()


def test_backed_data_with_copy_in_tl_is_refused(small, tmp_path):
    path = tmp_path / "counts.h5ad"
    small.write_h5ad(path)
    backed = ad.read_h5ad(path, backed="r")
    with pytest.raises(ValueError, match="to_memory"):
        scdmac.tl.scdmac(backed, 3, layer="counts", train_kwargs=ONE_EPOCH, copy=True)
    backed.file.close()


# ---- indices and AnnData objects that were not set up -------------------------------------------------
def test_indices_out_of_range_name_the_valid_range(trained):
    with pytest.raises(IndexError, match=r"indices \[303\] are outside the 300 cells"):
        trained.predict(indices=[0, 303])
    with pytest.raises(ValueError, match="integer row positions"):
        trained.get_latent_representation(indices=[0.5])
    mask = np.zeros(300, dtype=bool)
    mask[[2, 4]] = True
    assert (trained.predict(indices=mask) == trained.predict()[[2, 4]]).all()


def test_an_anndata_that_was_not_set_up_is_mapped_as_a_query(trained, small):
    # no setup_anndata needed: the reference's setup is transferred (see tests/test_samples.py)
    np.testing.assert_array_equal(trained.predict(adata=small), trained.predict())
    assert "_scdmac_neighbors" not in small.obsm


def test_one_query_serves_two_models_in_turn(trained, small):
    # mapping new cells onto a second model must not take them away from the first
    SCDMAC.setup_anndata(small, layer="counts")
    scvi.settings.seed = 1
    other = SCDMAC(small, n_clusters=3)
    other.train(**ONE_EPOCH)
    query = small[:50].copy()  # a copy of other's training data: it carries that AnnData's uuid
    first = trained.predict(adata=query)
    second = other.predict(adata=query)
    np.testing.assert_array_equal(trained.predict(adata=query), first)
    np.testing.assert_array_equal(other.predict(adata=query), second)
    np.testing.assert_array_equal(second, other.predict()[:50])


# ---- save and load -------------------------------------------------------------------------------------
def test_save_into_a_file_path_is_refused(trained, tmp_path):
    target = tmp_path / "model"
    target.write_text("not a folder")
    with pytest.raises(ValueError, match="is a file"):
        trained.save(target, overwrite=True)


def test_load_names_missing_folders_and_files(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="folder does not exist"):
        SCDMAC.load(tmp_path / "nowhere", adata=trained.adata)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no model.pt"):
        SCDMAC.load(tmp_path / "empty", adata=trained.adata)
    trained.save(tmp_path / "weights_only")
    with pytest.raises(ValueError, match=r"holds no AnnData.*save_anndata=True.*adata=adata"):
        SCDMAC.load(tmp_path / "weights_only")


@pytest.mark.parametrize("damage", ["truncate", "flip_middle"])
def test_damaged_weights_are_refused_by_the_checksum(trained, tmp_path, damage):
    trained.save(tmp_path / "m")
    path = tmp_path / "m" / "model.pt"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2 : len(data) // 2 + 64] = np.random.default_rng(0).bytes(64)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the checksum"):
        SCDMAC.load(tmp_path / "m", adata=trained.adata)
    # without its checksum file, a truncated file is still named as unreadable
    (tmp_path / "m" / "model.pt.sha256").unlink()
    if damage == "truncate":
        with pytest.raises(ValueError, match="truncated, damaged or not a model"):
            SCDMAC.load(tmp_path / "m", adata=trained.adata)


def test_load_refuses_reordered_or_other_genes(trained, tmp_path):
    trained.save(tmp_path / "m")
    reordered = trained.adata[:, ::-1].copy()
    with pytest.raises(ValueError, match="another order"):
        SCDMAC.load(tmp_path / "m", adata=reordered)
    renamed = trained.adata.copy()
    renamed.var_names = [f"other{i}" for i in range(renamed.n_vars)]
    with pytest.raises(ValueError, match=r"genes differ from the model's .*missing"):
        SCDMAC.load(tmp_path / "m", adata=renamed)
    loaded = SCDMAC.load(tmp_path / "m", adata=trained.adata)
    assert (loaded.predict() == trained.predict()).all()


# ---- the user's data is never changed ------------------------------------------------------------------
def _copy(matrix):
    return matrix.copy() if sp.issparse(matrix) else np.array(matrix, copy=True, order="K")


def _snapshot(adata: ad.AnnData) -> dict:
    return {
        "X_id": id(adata.X),
        "X": _copy(adata.X),
        "layers": {k: (id(v), _copy(v)) for k, v in adata.layers.items()},
        "obs": adata.obs.copy(),
        "var": adata.var.copy(),
        "obsm": set(adata.obsm),
        "uns": copy.deepcopy({k: v for k, v in adata.uns.items() if not k.startswith("_scvi")}),
    }


def _same(a, b) -> bool:
    if sp.issparse(a):
        return sp.issparse(b) and a.format == b.format and (a != b).nnz == 0
    return isinstance(b, np.ndarray) and a.flags.f_contiguous == b.flags.f_contiguous and np.array_equal(a, b)


@pytest.mark.parametrize("fmt", ["dense_c", "dense_f", "csr", "csc"])
@pytest.mark.parametrize("model_cls", [SCDMAC, SCDSEC])
def test_only_documented_keys_are_added(small, fmt, model_cls):
    dense = small.layers["counts"].toarray()
    matrix = {
        "dense_c": np.ascontiguousarray(dense),
        "dense_f": np.asfortranarray(dense),
        "csr": sp.csr_matrix(dense),
        "csc": sp.csc_matrix(dense),
    }[fmt]
    adata = ad.AnnData(X=matrix, obs=small.obs.copy(), var=small.var.copy(), layers={"counts": matrix.copy()})
    before = _snapshot(adata)
    scvi.settings.seed = 0
    model_cls.setup_anndata(adata, layer="counts")
    model_cls(adata, n_clusters=3).train(**ONE_EPOCH)
    prefix = model_cls._prefix
    assert id(adata.X) == before["X_id"] and _same(before["X"], adata.X)
    for key, (obj_id, value) in before["layers"].items():
        assert id(adata.layers[key]) == obj_id and _same(value, adata.layers[key])
    new_obs = {f"{prefix}_cluster", f"_{prefix}_indices"} | ({f"_{prefix}_partition"} if prefix == "scdsec" else set())
    assert set(adata.obs) - set(before["obs"]) == new_obs
    assert adata.obs[list(before["obs"])].equals(before["obs"])
    assert set(adata.var) - set(before["var"]) == {f"{prefix}_hvg"}
    assert set(adata.obsm) - before["obsm"] == {f"X_{prefix}", f"{prefix}_soft", f"_{prefix}_neighbors"}


def test_views_are_refused_with_the_fix(small):
    view = small[:200]
    with pytest.raises(ValueError, match=r"adata.copy\(\)"):
        SCDMAC.setup_anndata(view, layer="counts")
    assert view.is_view


# ---- interrupted runs resume ------------------------------------------------------------------------------
class _Crash(Exception):
    pass


class _CrashAtStage(Callback):
    """Fails a run when the named stage starts (as a killed process would, after the stages before)."""

    def __init__(self, stage: str):
        self.stage = stage

    def on_train_start(self, trainer, pl_module):
        if pl_module.stage.name == self.stage:
            raise _Crash(self.stage)


@pytest.mark.parametrize(("model_cls", "crash_at"), [(SCDMAC, "cluster"), (SCDMAC, "mask"), (SCDSEC, "cluster")])
def test_a_run_killed_part_way_resumes_to_the_same_labels(small, tmp_path, model_cls, crash_at):
    kwargs = {"hidden_widths": (32, 32, 64)} if model_cls is SCDSEC else {}

    def fresh():
        adata = small.copy()
        scvi.settings.seed = 0
        model_cls.setup_anndata(adata, layer="counts")
        return model_cls(adata, n_clusters=3, **kwargs)

    reference = fresh()
    reference.train(**FAST_TRAIN)
    expected = reference.predict()

    first = fresh()
    with pytest.raises(_Crash):
        first.train(checkpoint_dir=tmp_path / "ckpt", callbacks=[_CrashAtStage(crash_at)], **FAST_TRAIN)
    assert (tmp_path / "ckpt" / "checkpoint.pt").is_file()

    # a new process would start from a fresh model on the same data and settings
    resumed = fresh()
    torch.manual_seed(123)  # the checkpoint's random states replace whatever the process holds
    resumed.train(checkpoint_dir=tmp_path / "ckpt", **FAST_TRAIN)
    assert (resumed.predict() == expected).all()
    assert list(resumed.history) == list(reference.history)
    assert not (tmp_path / "ckpt" / "checkpoint.pt").exists()  # removed once the run completed


def test_a_checkpoint_of_other_settings_is_refused(small, tmp_path):
    SCDMAC.setup_anndata(small, layer="counts")
    model = SCDMAC(small, n_clusters=3)
    with pytest.raises(_Crash):
        model.train(checkpoint_dir=tmp_path, callbacks=[_CrashAtStage("mask")], **FAST_TRAIN)
    with pytest.raises(ValueError, match="other settings"):
        SCDMAC(small, n_clusters=3).train(checkpoint_dir=tmp_path, **{**FAST_TRAIN, "lr": 1e-2})
    # other counts of the same shape, or the same counts set up otherwise, are other data
    other = small.copy()
    other.layers["counts"] = other.layers["counts"].copy()
    other.layers["counts"].data[0] += 1
    SCDMAC.setup_anndata(other, layer="counts")
    with pytest.raises(ValueError, match="other settings or data"):
        SCDMAC(other, n_clusters=3).train(checkpoint_dir=tmp_path, **FAST_TRAIN)
    SCDMAC.setup_anndata(small, layer="counts", n_top_genes=100)
    with pytest.raises(ValueError, match="other settings or data"):
        SCDMAC(small, n_clusters=3).train(checkpoint_dir=tmp_path, **FAST_TRAIN)


def test_a_failed_stage_keeps_the_history_and_the_trained_model(trained):
    model = copy.deepcopy(trained)
    before = {k: v.copy() for k, v in model.history.items()}
    with pytest.raises(_Crash):
        model.train(stages="cluster", callbacks=_CrashAtStage("cluster"), **FAST_TRAIN)  # one callback, not a list
    assert model.is_trained_ and list(model.history) == list(before)
    assert all(model.history[k].equals(before[k]) for k in before)
    assert model.predict().shape == (model.adata.n_obs,)  # still usable (its centres were placed anew)


def test_training_arguments_checked_before_any_stage(small, tmp_path):
    SCDMAC.setup_anndata(small, layer="counts")
    model = SCDMAC(small, n_clusters=3)
    with pytest.raises(ValueError, match=r"update_interval'\] must be an integer of at least 1"):
        model.train(plan_kwargs={"update_interval": 0}, **FAST_TRAIN)
    # the clustering plan's own checks, refused before pretraining rather than when the clustering stage begins
    with pytest.raises(ValueError, match=r"plan_kwargs\['target_balance'\] must be at least 0"):
        model.train(plan_kwargs={"target_balance": -1}, **FAST_TRAIN)
    with pytest.raises(ValueError, match=r"plan_kwargs\['collapse_fraction'\] must be in \[0, 1\)"):
        model.train(plan_kwargs={"collapse_fraction": 1.0}, **FAST_TRAIN)
    assert not model.is_trained_
    with pytest.raises(ValueError, match="precision='64-true' is not supported"):
        model.train(precision="64-true", **FAST_TRAIN)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="checkpoint_dir .* is a file"):
        model.train(checkpoint_dir=tmp_path / "file", **FAST_TRAIN)
    assert not model.is_trained_ and model.history is None


def test_gradient_clipping_works_under_mixed_precision(small):
    # Lightning refuses to clip a fused optimiser's gradients under mixed precision: the plans then use Adam unfused
    SCDMAC.setup_anndata(small, layer="counts")
    model = SCDMAC(small, n_clusters=3)
    model.train(gradient_clip_val=1.0, precision="bf16-mixed", **ONE_EPOCH)
    assert model.is_trained_
