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


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs(path, tmp_path):
    from nbclient import NotebookClient

    import scdmac

    data = tmp_path / "cells.h5ad"
    adata = scdmac.data.simulate(n_cells=400, n_genes=300, n_clusters=4, seed=1)
    del adata.layers["counts"]  # like the shared files: raw counts in X
    adata.write_h5ad(data)

    nb = nbformat.read(path, as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    # a tutorial on a data file reads the small one; one on simulated data simulates few cells
    small = {"DATA": f'"{data}"', "N_CELLS": "300", "MAX_EPOCHS": "2", "SEED": "0"}
    names = [line.split("=")[0].strip() for line in params.source.splitlines() if "=" in line]
    params.source = "\n".join(f"{name} = {small[name]}" for name in names if name in small)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs)
