from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest

import scdmac
from scdmac._cli import main

FAST = ["--max-epochs", "2", "--no-progress", "--seed", "0"]


@pytest.fixture
def counts_file(small, tmp_path):
    path = tmp_path / "in.h5ad"
    small.write_h5ad(path)
    return path


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("scdmac: error: ")
    for needle in needles:
        assert needle in err[-1]
    return err[-1]


def _no_leftovers(folder, allowed):
    assert sorted(p.name for p in folder.iterdir()) == sorted(allowed)


@pytest.mark.parametrize("model", ["scdmac", "scdsec"])
def test_cluster_writes_the_api_keys(counts_file, tmp_path, model):
    out = tmp_path / "out.h5ad"
    before = counts_file.read_bytes()
    args = [str(counts_file), str(out), "--model", model, "--n-clusters", "3", "--layer", "counts", *FAST]
    assert main(["cluster", *args, "--save-model", str(tmp_path / "m")]) == 0
    result = ad.read_h5ad(out)
    assert result.obsm[f"X_{model}"].shape[0] == 300
    assert result.obsm[f"{model}_soft"].shape == (300, 3)
    assert result.obs[f"{model}_cluster"].nunique() <= 3
    assert f"{model}_hvg" in result.var
    assert counts_file.read_bytes() == before
    loaded = getattr(scdmac.model, model.upper()).load(tmp_path / "m", adata=result)
    assert (loaded.predict() == result.obs[f"{model}_cluster"].astype(int).to_numpy()).all()
    _no_leftovers(tmp_path, ["in.h5ad", "out.h5ad", "m"])


def test_missing_input(tmp_path, capsys):
    assert main(["cluster", str(tmp_path / "nope.h5ad"), str(tmp_path / "o.h5ad")]) == 2
    _one_line_error(capsys, "not found")
    _no_leftovers(tmp_path, [])


def test_not_an_h5ad(tmp_path, capsys):
    bad = tmp_path / "bad.h5ad"
    bad.write_text("cell,gene\n")
    assert main(["cluster", str(bad), str(tmp_path / "o.h5ad")]) == 2
    _one_line_error(capsys, "cannot read")
    _no_leftovers(tmp_path, ["bad.h5ad"])


def test_missing_layer(counts_file, tmp_path, capsys):
    assert main(["cluster", str(counts_file), str(tmp_path / "o.h5ad"), "--layer", "raw", *FAST]) == 2
    _one_line_error(capsys, "'raw'", "counts")
    _no_leftovers(tmp_path, ["in.h5ad"])


def test_non_count_data(small, tmp_path, capsys):
    small.X = small.X.astype(np.float32) * 0.5
    path = tmp_path / "in.h5ad"
    small.write_h5ad(path)
    assert main(["cluster", str(path), str(tmp_path / "o.h5ad"), *FAST]) == 2
    _one_line_error(capsys, "non-integer")
    _no_leftovers(tmp_path, ["in.h5ad"])


def test_too_many_clusters(counts_file, tmp_path, capsys):
    assert main(["cluster", str(counts_file), str(tmp_path / "o.h5ad"), "--n-clusters", "1000", *FAST]) == 2
    _one_line_error(capsys, "n_clusters")


def test_output_exists_or_folder_missing(counts_file, tmp_path, capsys):
    out = tmp_path / "o.h5ad"
    out.write_text("keep me")
    assert main(["cluster", str(counts_file), str(out), *FAST]) == 2
    _one_line_error(capsys, "--overwrite")
    assert out.read_text() == "keep me"
    assert main(["cluster", str(counts_file), str(tmp_path / "no" / "o.h5ad"), *FAST]) == 2
    _one_line_error(capsys, "does not exist")


def test_console_entry_points():
    for cmd in (["-m", "scdmac", "--help"], ["-m", "scdmac", "cluster", "--help"]):
        done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "usage: scdmac" in done.stdout
    done = subprocess.run([sys.executable, "-m", "scdmac", "cluster"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "required" in done.stderr


def test_installed_script():
    from pathlib import Path

    script = Path(sys.executable).parent / "scdmac"
    if not script.exists():
        pytest.skip("package not installed with its console script")
    done = subprocess.run([str(script), "cluster", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--n-clusters" in done.stdout
