"""``scdmac cluster``: outputs match the Python API; bad input gives one line, exit 2 and no files.

``import scdmac``, ``--help`` and input errors leave torch, scvi-tools, scanpy and Lightning unimported.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import scdmac
from scdmac._cli import main

FAST = ["--max-epochs", "1", "--seed", "0"]
HEAVY = ("torch", "scvi", "scanpy", "lightning")


@pytest.fixture(scope="module")
def _source(tmp_path_factory):
    adata = scdmac.data.simulate(n_cells=200, n_genes=150, n_clusters=3, de_fraction=0.15, seed=0)
    assert "counts" in adata.layers
    path = tmp_path_factory.mktemp("cli") / "source.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture
def counts_file(_source, tmp_path):
    """200 cells × 150 genes of raw counts in layer 'counts' (and in X), alone in ``tmp_path``."""
    return Path(shutil.copy(_source, tmp_path / "in.h5ad"))


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _one_line_error(capsys, *needles) -> str:
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("scdmac: error: ")
    for needle in needles:
        assert needle in lines[0]
    assert out == ""
    return lines[0]


@pytest.mark.parametrize("model", ["scdmac", "scdsec"])
def test_cluster_writes_the_api_keys(counts_file, tmp_path, capsys, model):
    out, saved = tmp_path / "out.h5ad", tmp_path / "model"
    before = counts_file.read_bytes()
    args = ["cluster", str(counts_file), str(out), "--model", model, "--n-clusters", "3", "--layer", "counts", *FAST]
    if model == "scdsec":  # replacing existing outputs, quietly
        out.write_text("old")
        saved.mkdir()
        (saved / "stale").write_text("old")
        args += ["--overwrite", "--no-progress", "--cluster-init", "leiden", "--cluster-metric", "cosine"]
    assert main([*args, "--save-model", str(saved)]) == 0
    stdout, stderr = capsys.readouterr()
    summary = stdout.strip().splitlines()
    assert len(summary) == 1 and "200 cells" in summary[0] and str(out) in summary[0] and " s" in summary[0]
    assert ("stage 'cluster'" in stderr) == (model == "scdmac")  # progress unless --no-progress

    result = ad.read_h5ad(out)
    assert result.obsm[f"X_{model}"].shape[0] == 200 and result.obsm[f"X_{model}"].dtype == np.float32
    assert result.obsm[f"{model}_soft"].shape == (200, 3)
    assert result.obs[f"{model}_cluster"].dtype == "category"
    assert f"{model}_hvg" in result.var and f"_{model}_neighbors" in result.obsm
    assert counts_file.read_bytes() == before
    assert _files(tmp_path) == ["in.h5ad", "model", "out.h5ad"]
    assert _files(saved) == ["model.pt", "model.pt.sha256"]
    loaded = getattr(scdmac.model, model.upper()).load(saved, adata=result)
    assert (loaded.predict() == result.obs[f"{model}_cluster"].astype(int).to_numpy()).all()
    # --cluster-metric reaches the model: SCDSEC's default is Euclidean, SCDMAC's cosine
    assert loaded.module.cluster_head.metric == "cosine"


def _counts(tmp_path, change):
    """Write a copy of the simulated counts with ``change(X)`` applied to layer 'counts'."""
    adata = scdmac.data.simulate(n_cells=60, n_genes=40, n_clusters=2, seed=0)
    X = adata.layers["counts"].astype(np.float32)
    X = X.toarray() if hasattr(X, "toarray") else X
    change(X)
    adata.layers["counts"] = X
    adata.write_h5ad(tmp_path / "in.h5ad")


def _set(value):
    def change(X):
        X[3, 2] = value

    return change


# (name, prepare(tmp_path, counts_file), extra args, words the error names)
BAD = [
    ("missing input", lambda t, f: f.unlink(), [], ["in.h5ad", "not found"]),
    ("input is a folder", lambda t, f: (f.unlink(), f.mkdir()), [], ["not a file"]),
    ("not an h5ad", lambda t, f: f.write_text("cell,gene\n1,2\n"), [], ["cannot read", "h5ad"]),
    ("missing layer", None, ["--layer", "raw"], ["'raw'", "'counts'", "--layer"]),
    ("NaN", lambda t, f: _counts(t, _set(np.nan)), ["--layer", "counts"], ["NaN"]),
    ("inf", lambda t, f: _counts(t, _set(np.inf)), ["--layer", "counts"], ["infinite"]),
    ("negative", lambda t, f: _counts(t, _set(-1)), ["--layer", "counts"], ["negative"]),
    ("non-integer", lambda t, f: _counts(t, _set(0.5)), ["--layer", "counts"], ["non-integer"]),
    ("too many clusters", None, ["--n-clusters", "1000"], ["n_clusters=1000"]),
    ("output exists", lambda t, f: (t / "o.h5ad").write_text("keep"), [], ["o.h5ad", "--overwrite"]),
    ("output is the input", None, ["--overwrite", "--out-is-in"], ["is the input file"]),
    ("model folder exists", lambda t, f: (t / "m").mkdir(), ["--save-model", "{tmp}/m"], ["--save-model", "exists"]),
    ("unknown accelerator", None, ["--accelerator", "banana"], ["--accelerator banana", "invalid"]),
    ("missing batch column", None, ["--batch-key", "donor"], ["--batch-key 'donor'", "adata.obs", "'cell_type'"]),
    ("output name too long", None, ["--out-name", "o" * 250 + ".h5ad"], ["too long", "at most"]),
]


@pytest.mark.parametrize(("prepare", "extra", "needles"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_one_line_no_files(counts_file, tmp_path, capsys, prepare, extra, needles):
    if prepare is not None:
        prepare(tmp_path, counts_file)
    out = str(tmp_path / "o.h5ad")
    if "--out-is-in" in extra:
        extra, out = [a for a in extra if a != "--out-is-in"], str(counts_file)
    if "--out-name" in extra:
        out = str(tmp_path / extra[extra.index("--out-name") + 1])
        extra = extra[: extra.index("--out-name")]
    extra = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    before = {p.name: (p.read_bytes() if p.is_file() else None) for p in tmp_path.iterdir()}
    assert main(["cluster", str(counts_file), out, *FAST, "--no-progress", *extra]) == 2
    _one_line_error(capsys, *needles)
    assert {p.name: (p.read_bytes() if p.is_file() else None) for p in tmp_path.iterdir()} == before


def test_output_folder_that_cannot_be_written(counts_file, tmp_path, capsys, monkeypatch):
    """Permission bits can pass while the file system refuses (read-only, full): found before training."""

    def touch(self, *args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(Path, "touch", touch)
    assert main(["cluster", str(counts_file), str(tmp_path / "o.h5ad"), *FAST, "--no-progress"]) == 2
    _one_line_error(capsys, "cannot write in folder", "Read-only file system")
    assert _files(tmp_path) == ["in.h5ad"]


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--seed", "-1", "from 0 to"),
        ("--seed", str(2**32), "from 0 to"),
        ("--seed", "x", "not an integer"),
        ("--batch-size", "1", "at least 2"),  # a minibatch of one cell has no batch statistics
        ("--max-epochs", "0", "positive integer"),
        ("--n-clusters", "x", "invalid int"),
        ("--target-sum", "0", "positive number or 'median'"),
        ("--target-sum", "mean", "positive number or 'median'"),
    ],
)
def test_bad_integer_names_the_option(counts_file, tmp_path, capsys, option, value, words):
    assert main(["cluster", str(counts_file), str(tmp_path / "o.h5ad"), option, value]) == 2
    err = capsys.readouterr().err
    assert f"argument {option}: " in err and words in err and "Traceback" not in err
    assert _files(tmp_path) == ["in.h5ad"]


def test_batch_key_is_passed_to_setup(counts_file, tmp_path, capsys, monkeypatch):
    seen = {}

    def setup_anndata(cls, adata, **kwargs):  # stop before training: only the arguments matter here
        seen.update(kwargs)
        raise ValueError("stopped after setup")

    monkeypatch.setattr(scdmac.model.SCDMAC, "setup_anndata", classmethod(setup_anndata))
    args = ["cluster", str(counts_file), str(tmp_path / "o.h5ad"), *FAST, "--no-progress", "--layer", "counts"]
    assert main([*args, "--batch-key", "cell_type"]) == 2
    _one_line_error(capsys, "stopped after setup")
    assert seen["batch_key"] == "cell_type" and seen["layer"] == "counts"
    seen.clear()
    assert main(args) == 2
    capsys.readouterr()
    assert "batch_key" not in seen  # not passed unless asked for
    assert _files(tmp_path) == ["in.h5ad"]


def test_target_sum_is_passed_to_setup(counts_file, tmp_path, capsys, monkeypatch):
    seen = []

    def setup_anndata(cls, adata, **kwargs):  # stop before training: only the arguments matter here
        seen.append(kwargs.get("target_sum", "not passed"))
        raise ValueError("stopped after setup")

    monkeypatch.setattr(scdmac.model.SCDMAC, "setup_anndata", classmethod(setup_anndata))
    args = ["cluster", str(counts_file), str(tmp_path / "o.h5ad"), *FAST, "--no-progress"]
    for extra in (["--target-sum", "median"], ["--target-sum", "5000"], []):
        assert main([*args, *extra]) == 2
    capsys.readouterr()
    assert seen == [None, 5000.0, "not passed"]  # "median" is setup_anndata's None; else the package's default
    assert _files(tmp_path) == ["in.h5ad"]


def test_precision_is_passed_to_train(counts_file, tmp_path, capsys, monkeypatch):
    seen = []

    def train(self, **kwargs):  # stop before training (as Ctrl-C would): only the arguments matter here
        seen.append(kwargs.get("precision", "not passed"))
        raise KeyboardInterrupt

    monkeypatch.setattr(scdmac.model.SCDMAC, "train", train)
    args = ["cluster", str(counts_file), str(tmp_path / "o.h5ad"), *FAST, "--no-progress"]
    assert main([*args, "--precision", "32-true"]) == 130
    assert main(args) == 130
    capsys.readouterr()
    assert seen == ["32-true", "not passed"]  # not passed unless asked for: the package's default applies
    assert main([*args, "--precision", "fp8"]) == 2
    assert "argument --precision: invalid choice" in capsys.readouterr().err
    assert _files(tmp_path) == ["in.h5ad"]


def _run_python(code: str, cwd: Path) -> dict:
    """Run ``code`` in a fresh interpreter; it prints one JSON object as its last line."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_loads_no_heavy_stack(tmp_path):
    """``import scdmac`` is cheap: the submodules (torch, scvi-tools, scanpy) load on first use."""
    code = (
        "import json, sys\n"
        "import scdmac\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps({'heavy': heavy, 'dir': dir(scdmac), 'all': scdmac.__all__, 'version': scdmac.__version__}))"
    )
    got = _run_python(code, tmp_path)
    assert got["heavy"] == []
    assert got["version"] and set(got["all"]) <= set(got["dir"])
    assert {"data", "metrics", "model", "module", "pl", "tl", "train"} <= set(got["all"])


def test_submodules_on_first_use():
    from scdmac import model
    from scdmac.model._scdmac import SCDMAC

    assert scdmac.model is model and scdmac.model.SCDMAC is SCDMAC
    assert callable(scdmac.data.simulate) and callable(scdmac.tl.scdsec)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        scdmac.nope  # noqa: B018


def test_help_and_input_errors_load_no_heavy_stack(counts_file, tmp_path):
    """Help, usage errors and the input checks made before training need none of torch, scvi, scanpy, Lightning."""
    (tmp_path / "exists.h5ad").write_text("keep")
    inp, out = str(counts_file), str(tmp_path / "o.h5ad")
    runs = [
        ["--help"],
        ["cluster", "--help"],
        ["demo", "--help"],
        ["cluster"],
        ["cluster", str(tmp_path / "nope.h5ad"), out],
        ["cluster", inp, str(tmp_path / "exists.h5ad")],
        ["cluster", inp, str(tmp_path / "no" / "o.h5ad")],
        ["cluster", inp, out, "--max-epochs", "0"],
        ["cluster", inp, out, "--batch-size", "x"],
        ["cluster", inp, out, "--layer", "raw"],
        ["cluster", inp, out, "--batch-key", "donor"],
        ["demo", "--n-cells", "5"],
        ["demo", "--out", str(tmp_path / "exists.h5ad")],
    ]
    code = (
        "import contextlib, io, json, sys\n"
        "from scdmac._cli import main\n"
        "codes = []\n"
        f"for argv in {runs!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "        codes.append(main(argv))\n"
        f"print(json.dumps({{'codes': codes, 'heavy': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    got = _run_python(code, tmp_path)
    assert got["codes"] == [0, 0, 0] + [2] * (len(runs) - 3)
    assert got["heavy"] == []
    assert not (tmp_path / "o.h5ad").exists()


def test_output_folder_missing(counts_file, tmp_path, capsys):
    assert main(["cluster", str(counts_file), str(tmp_path / "no" / "o.h5ad"), *FAST]) == 2
    _one_line_error(capsys, "'" + str(tmp_path / "no") + "'", "does not exist")
    assert _files(tmp_path) == ["in.h5ad"]


def test_error_is_the_last_line_with_progress(counts_file, tmp_path, capsys):
    assert main(["cluster", str(counts_file), str(tmp_path / "o.h5ad"), "--layer", "raw", *FAST]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert lines[-1].startswith("scdmac: error: Layer 'raw'") and "Traceback" not in err and out == ""


def test_failed_write_leaves_nothing(counts_file, tmp_path, capsys, monkeypatch):
    """A run that dies while writing (here: Ctrl-C) leaves neither OUT nor a temporary file."""

    def train(self, **kwargs):  # skip training: only the writing matters here
        pass

    def write_h5ad(self, path, **kwargs):
        Path(path).write_bytes(b"half an h5ad")
        raise KeyboardInterrupt

    monkeypatch.setattr(scdmac.model.SCDMAC, "train", train)
    monkeypatch.setattr(ad.AnnData, "write_h5ad", write_h5ad)
    out = tmp_path / "o.h5ad"
    assert main(["cluster", str(counts_file), str(out), *FAST, "--save-model", str(tmp_path / "m")]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "scdmac: error: interrupted"
    assert _files(tmp_path) == ["in.h5ad"]


def test_usage_in_process(capsys):
    assert main(["--help"]) == 0
    assert "usage: scdmac" in capsys.readouterr().out
    assert main(["cluster"]) == 2  # argparse: input and output are required
    assert "required" in capsys.readouterr().err
    assert main(["cluster", "a.h5ad", "b.h5ad", "--max-epochs", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err


def test_console_entry_points(counts_file, tmp_path):
    """``python -m scdmac`` and the installed ``scdmac`` script; a quiet run in a fresh process keeps Lightning's
    notices out (Lightning sets its loggers up when the CLI first imports it)."""
    script = Path(sys.executable).parent / "scdmac"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scdmac"]
    runs = {
        "module": [sys.executable, "-m", "scdmac", "--help"],
        "module cluster": [sys.executable, "-m", "scdmac", "cluster", "--help"],
        "error": [*command, "cluster", str(tmp_path / "nope.h5ad"), "o.h5ad"],
        "quiet": [*command, "cluster", "in.h5ad", "o.h5ad", *FAST, "--n-clusters", "3", "--no-progress"],
    }
    procs = {
        k: subprocess.Popen(v, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        for k, v in runs.items()
    }
    done = {}
    for name, proc in procs.items():  # communicate, not wait: full pipes would block the child
        out, err = proc.communicate(timeout=300)
        done[name] = (proc.returncode, out, err)

    rc, out, _ = done["module"]
    assert rc == 0 and "usage: scdmac" in out and "cluster" in out and "demo" in out
    rc, out, _ = done["module cluster"]
    assert rc == 0 and "usage: scdmac cluster" in out and "--n-clusters" in out
    rc, out, err = done["error"]  # through the installed script when there is one
    assert rc == 2 and out == ""
    assert err.strip().splitlines() == [f"scdmac: error: input file {str(tmp_path / 'nope.h5ad')!r} not found"]
    rc, out, err = done["quiet"]
    assert rc == 0 and "put 200 cells in 3 clusters" in out and (tmp_path / "o.h5ad").is_file()
    for notice in ("GPU available", "Tip:", "Seed set", "Generating sequential"):
        assert notice not in err, err


def test_resume_continues_an_interrupted_run(counts_file, tmp_path, monkeypatch):
    from scdmac.train import StagePlan

    reference = tmp_path / "ref.h5ad"
    assert main(["cluster", str(counts_file), str(reference), *FAST, "--no-progress"]) == 0
    original = StagePlan.on_train_start

    def crash_at_cluster(self):
        if self.stage.name == "cluster":
            raise RuntimeError("killed")
        original(self)

    monkeypatch.setattr(StagePlan, "on_train_start", crash_at_cluster)
    out = tmp_path / "o.h5ad"
    with pytest.raises(RuntimeError, match="killed"):
        main(["cluster", str(counts_file), str(out), *FAST, "--no-progress", "--resume", str(tmp_path / "ckpt")])
    assert not out.exists() and (tmp_path / "ckpt" / "checkpoint.pt").is_file()
    monkeypatch.setattr(StagePlan, "on_train_start", original)
    assert (
        main(["cluster", str(counts_file), str(out), *FAST, "--no-progress", "--resume", str(tmp_path / "ckpt")]) == 0
    )
    got, expected = ad.read_h5ad(out), ad.read_h5ad(reference)
    assert (got.obs["scdmac_cluster"].to_numpy() == expected.obs["scdmac_cluster"].to_numpy()).all()


def test_a_checkpoint_of_another_run_is_a_one_line_error(counts_file, tmp_path, capsys):
    from scdmac.model._files import CHECKPOINT_FILE

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    out = tmp_path / "o.h5ad"
    assert main(["cluster", str(counts_file), str(out), *FAST, "--no-progress", "--resume", str(ckpt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scdmac: error: --resume: Cannot read the checkpoint")
    assert "delete it to start over" in err[0] and not out.exists()


def test_ctrl_c_during_training_exits_130_and_leaves_nothing(counts_file, tmp_path, capsys, monkeypatch):
    import signal

    from scdmac.train import StagePlan

    def interrupt(self):
        raise KeyboardInterrupt  # what Ctrl-C raises inside Lightning's fit

    monkeypatch.setattr(StagePlan, "on_train_start", interrupt)
    assert main(["cluster", str(counts_file), str(tmp_path / "o.h5ad"), *FAST]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "scdmac: error: interrupted"
    assert _files(tmp_path) == ["in.h5ad"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
