"""What a default ``train()`` prints, and scvi-tools' data-splitting arguments of ``train()``."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import scvi

import scdmac
from scdmac.model import SCDMAC, SCDSEC

TRAIN_AND_PRINT = """
import scvi, scdmac
adata = scdmac.data.simulate(n_cells=300, n_genes=200, n_clusters=3, de_fraction=0.15, seed=0)
for cls in (scdmac.model.SCDMAC, scdmac.model.SCDSEC):
    cls.setup_anndata(adata, layer="counts")
    model = cls(adata, n_clusters={k})
    model.train(max_epochs=2)
"""

#: what the package prints: its stage lines (start, why it stopped), its progress bars (named by
#: stage), the estimated number of clusters, how many components the graph kept, and its own warnings
PACKAGE_LINE = re.compile(
    r"stage|Stage|Estimated \d+ clusters|graph on \d+ principal components|kept \d+ of the|scdmac|^\s*$"
)


@pytest.mark.parametrize("k", ["3", "None"], ids=["given_k", "estimated_k"])
def test_default_training_prints_only_the_package_s_own_lines(k):
    env = {**os.environ, "COLUMNS": "250", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", TRAIN_AND_PRINT.format(k=k)], capture_output=True, text=True, env=env, timeout=600
    )
    assert run.returncode == 0, run.stderr[-2000:]
    text = re.sub(r"\x1b\[[0-9;]*m", "", run.stdout + run.stderr)  # rich's colours
    lines = [piece for line in text.splitlines() for piece in line.split("\r")]
    foreign = [line for line in lines if not PACKAGE_LINE.search(line)]
    assert not foreign, "lines that are not the package's own:\n" + "\n".join(foreign[:20])
    for stage in ("denoise", "mask", "pretrain", "cluster"):
        assert f"{stage} stage, epoch 2/2" in text  # each bar names its stage
    assert "Stage 'denoise' ran its 2 epochs" in text  # why each stage stopped
    if k == "None":
        assert re.search(r"Estimated \d+ clusters", text)


@pytest.fixture(scope="module")
def _split_cells():
    return scdmac.data.simulate(n_cells=300, n_genes=200, n_clusters=3, de_fraction=0.15, seed=0)


@pytest.mark.parametrize("cls", [SCDMAC, SCDSEC])
def test_validation_split_logs_validation_losses(cls, _split_cells):
    adata = _split_cells.copy()
    cls.setup_anndata(adata, layer="counts")
    scvi.settings.seed = 0
    model = cls(adata, n_clusters=3)
    model.train(max_epochs=3, train_size=0.9, validation_size=0.1, enable_progress_bar=False)
    for stage in model.stages:
        curve = model.history[f"{stage.name}_validation_loss"]
        assert len(curve) == 3 and np.isfinite(curve.to_numpy(dtype=float)).all()
    # every cell is still clustered, the held-out ones included
    assert adata.obs[model.cluster_key].notna().all()


def test_validation_every_n_epochs_and_plateau_on_validation(_split_cells):
    adata = _split_cells.copy()
    SCDMAC.setup_anndata(adata, layer="counts")
    model = SCDMAC(adata, n_clusters=3)
    model.train(
        max_epochs=4, stages="denoise", validation_size=0.2, check_val_every_n_epoch=2, enable_progress_bar=False
    )
    assert len(model.history["denoise_validation_loss"]) == 2
    # the split is kept on the model, as scvi-tools keeps it
    train, val = model.train_indices, model.validation_indices
    assert len(train) + len(val) == adata.n_obs and len(val) == round(0.2 * adata.n_obs)
    assert not set(train) & set(val)


def test_split_sizes_are_checked_before_training(_split_cells):
    adata = _split_cells.copy()
    SCDMAC.setup_anndata(adata, layer="counts")
    model = SCDMAC(adata, n_clusters=3)
    with pytest.raises(ValueError, match="train_size \\+ validation_size must be between 0 and 1"):
        model.train(train_size=0.5, validation_size=0.7)
    assert not model.is_trained_


def test_split_is_reproducible_and_disjoint():
    from scdmac.data._loaders import split_cells

    scvi.settings.seed = 3
    train, val = split_cells(100, 0.8, 0.2)
    scvi.settings.seed = 3
    again, _ = split_cells(100, 0.8, 0.2)
    assert len(train) == 80 and len(val) == 20 and not set(train) & set(val)
    np.testing.assert_array_equal(train, again)
    first, _ = split_cells(100, 0.8, 0.2, shuffle=False)
    np.testing.assert_array_equal(first, np.arange(80))


def test_sparse_minibatches_and_loader_arguments(_split_cells):
    adata = _split_cells.copy()
    SCDMAC.setup_anndata(adata, layer="counts")
    scvi.settings.seed = 0
    dense = SCDMAC(adata, n_clusters=3)
    dense.train(max_epochs=2, stages=["denoise"], enable_progress_bar=False)
    scvi.settings.seed = 0
    sparse = SCDMAC(adata, n_clusters=3)
    sparse.train(
        max_epochs=2,
        stages=["denoise"],
        load_sparse_tensor=True,
        datasplitter_kwargs={"pin_memory": False},
        enable_progress_bar=False,
    )
    np.testing.assert_allclose(
        dense.history["denoise_loss"].to_numpy(dtype=float),
        sparse.history["denoise_loss"].to_numpy(dtype=float),
        rtol=1e-4,
    )
