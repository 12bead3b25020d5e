"""Distributed data parallel training through Lightning, with two CPU processes (gloo)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scvi
from sklearn.metrics import adjusted_rand_score

import scdmac

SCRIPT = Path(__file__).parent / "scripts" / "train_distributed.py"


# SCDSEC's run (about 90 s here) goes with the slow tests to keep the default run short
@pytest.mark.parametrize("model_name", ["SCDMAC", pytest.param("SCDSEC", marks=pytest.mark.slow)])
def test_two_process_ddp_gives_the_clusters_of_one_process(model_name, tmp_path):
    out = tmp_path / "labels"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), model_name, "2", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rank0, rank1 = (np.load(f"{out}_rank{r}.npy") for r in (0, 1))
    # the ranks hold one model: the same weights, targets and labels
    np.testing.assert_array_equal(rank0, rank1)

    adata = scdmac.data.simulate(n_cells=600, n_genes=200, n_clusters=3, de_fraction=0.15, seed=0)
    scvi.settings.seed = 0
    model_cls = getattr(scdmac.model, model_name)
    model_cls.setup_anndata(adata, layer="counts")
    single = model_cls(adata, n_clusters=3)
    single.train(accelerator="cpu", devices=1, enable_progress_bar=False)
    assert adjusted_rand_score(single.predict(), rank0) > 0.95
    assert adjusted_rand_score(adata.obs["cell_type"], rank0) > 0.95
