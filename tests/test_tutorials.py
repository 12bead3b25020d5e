"""The tutorials' code, run on small simulated data with few epochs, so the notebooks cannot silently rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.ipynb"))


def test_tutorials_exist_and_hold_outputs():
    assert len(TUTORIALS) >= 2
    for path in TUTORIALS:
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(c.get("execution_count") for c in code), f"{path.name} is stored unexecuted"
        images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
        assert images, f"{path.name} holds no figures"
        assert not [o for c in code for o in c.outputs if o.output_type == "error"], f"{path.name} stored an error"
        text = nbformat.writes(nb)
        for machine_path in ("/work/", "/tmp/", "/home/", "/Users/", "shared/data"):
            assert machine_path not in text, f"{path.name} mentions {machine_path}: it must run from a clone"


def test_tutorials_use_labels_only_to_evaluate():
    for path in TUTORIALS:
        cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
        code = "\n".join(cells)
        assert "n_clusters=None" in code, f"{path.name} should estimate the number of clusters"
        assert 'filterwarnings("ignore")' not in code, f"{path.name} hides every warning"
        first_evaluation = next(i for i, source in enumerate(cells) if "agreement(" in source)
        early = [source for source in cells[:first_evaluation] if "cell_type" in source]
        assert not early, f"{path.name} reads the labels before evaluating: {early}"


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path, http_folder, monkeypatch):
    from nbclient import NotebookClient

    import scdmac

    # a tutorial on a public file reads a small one by URL, through the package's download cache
    base, root, requested = http_folder
    adata = scdmac.data.simulate(n_cells=400, n_genes=300, n_clusters=4, seed=1)
    adata.X = adata.layers.pop("counts")  # like the public files: raw counts in X
    adata.write_h5ad(root / "cells.h5ad")
    monkeypatch.setenv(scdmac.data.DATA_DIR_VARIABLE, str(tmp_path / "cache"))  # the kernel inherits it

    nb = nbformat.read(path, as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    # a tutorial on a data file reads the small one; one on simulated data simulates few cells
    small = {"DATA": f'"{base}/cells.h5ad"', "N_CELLS": "300", "MAX_EPOCHS": "2", "SEED": "0"}
    names = [line.split("=")[0].strip() for line in params.source.splitlines() if "=" in line]
    params.source = "\n".join(f"{name} = {small[name]}" for name in names if name in small)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert requested == (["/cells.h5ad"] if "DATA" in names else [])
