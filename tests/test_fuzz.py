"""Property-based tests: generated count matrices and arguments give a result or an error of scdmac's own.

For any generated input, setup + training + outputs either succeed with the documented shapes and
finite values, or raise an exception from scdmac's own code (not from deep inside torch, scikit-learn
or scvi-tools) with a message; the input AnnData is never changed. CI runs a small budget
(``SCDMAC_FUZZ_EXAMPLES``, default 30 per test, the same cases each run); raise it, and set
``SCDMAC_FUZZ_SEED`` for a fresh search, to look further::

    SCDMAC_FUZZ_EXAMPLES=200 SCDMAC_FUZZ_SEED=7 python -m pytest -m fuzz tests/test_fuzz.py
"""

from __future__ import annotations

import os
import traceback
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import scvi
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import scdmac
from scdmac.model import SCDMAC, SCDSEC

pytestmark = pytest.mark.fuzz

PACKAGE = Path(scdmac.__file__).resolve().parent
EXAMPLES = int(os.environ.get("SCDMAC_FUZZ_EXAMPLES", "30"))
#: unset: the same derandomized cases on every run; a number: a fresh search from that seed
SEARCH_SEED = os.environ.get("SCDMAC_FUZZ_SEED")
SMALL = {SCDMAC: {"n_hidden": 16, "n_latent": 4, "n_bottleneck": 8}, SCDSEC: {"hidden_widths": (16, 16, 32)}}
BREAKS = ["matrix", "n_clusters", "n_neighbors", "n_top_genes", "n_pcs", "batch_size"]


@st.composite
def matrices(draw, broken: bool):
    """A cells × genes matrix of counts in one of AnnData's formats; ``broken``: with one kind of fault."""
    n_cells = draw(st.integers(2, 60))
    n_genes = draw(st.integers(2, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    groups = rng.integers(0, 3, n_cells)
    means = rng.gamma(1.0, 3.0, size=(3, n_genes))
    X = rng.poisson(means[groups]).astype(np.float64)
    X[X.sum(1) == 0, 0] = 1  # valid counts have no empty cell
    if broken:
        kind = draw(
            st.sampled_from(
                ["fractions", "negative", "nan", "inf", "empty_cell", "empty_gene", "identical", "one_cell", "one_gene"]
            )
        )
        if kind == "fractions":
            X[0, 0] = 0.5
        elif kind == "negative":
            X[-1, -1] = -1
        elif kind in ("nan", "inf"):
            X[0, -1] = np.nan if kind == "nan" else np.inf
        elif kind == "empty_cell":
            X[n_cells // 2] = 0
        elif kind == "empty_gene":
            X[:, 0] = 0
        elif kind == "identical":
            X[:] = X[0]
        elif kind == "one_cell":
            X = X[:1]
        elif kind == "one_gene":
            X = X[:, :1] + 1
    dtype = draw(st.sampled_from([np.float32, np.float64] + ([np.int32, np.int64] if np.isfinite(X).all() else [])))
    X = X.astype(dtype)
    fmt = draw(st.sampled_from(["csr", "csc", "dense_c", "dense_f"]))
    return {"csr": sp.csr_matrix, "csc": sp.csc_matrix, "dense_c": np.ascontiguousarray, "dense_f": np.asfortranarray}[
        fmt
    ](X)


@st.composite
def cases(draw):
    """Valid inputs half of the time; otherwise one fault, in the matrix or in one argument."""
    broken = draw(st.sampled_from([None] * len(BREAKS) + BREAKS))
    X = draw(matrices(broken == "matrix"))
    n_cells, n_genes = X.shape
    valid = {
        "n_clusters": draw(st.one_of(st.none(), st.integers(2, max(2, min(6, n_cells - 1))))),
        "n_neighbors": draw(st.integers(1, max(1, min(15, n_cells - 1)))),
        "n_top_genes": draw(st.integers(2, n_genes + 5)),
        "n_pcs": draw(st.integers(1, 10)),
        "batch_size": draw(st.integers(2, 64)),
    }
    bad = {
        "n_clusters": st.one_of(st.integers(-2, 1), st.integers(n_cells, n_cells + 3), st.just(2.5)),
        "n_neighbors": st.one_of(st.integers(-1, 0), st.integers(n_cells, n_cells + 3)),
        "n_top_genes": st.integers(-1, 1),
        "n_pcs": st.integers(-1, 0),
        "batch_size": st.one_of(st.integers(-2, 1), st.just(3.0)),
    }
    if broken in bad:
        valid[broken] = draw(bad[broken])
    return {"X": X, **valid}


def _raised_by_scdmac(err: BaseException) -> bool:
    """The innermost frame of the traceback lies in scdmac's own source."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and Path(frames[-1].filename).resolve().is_relative_to(PACKAGE)


def _check(model_cls, case) -> None:
    X = case["X"]
    before = X.copy() if sp.issparse(X) else np.array(X, copy=True, order="K")
    adata = ad.AnnData(X=X)
    scvi.settings.seed = 0
    try:
        # a generated input may warn in many libraries; recorded, and only ours is asserted on
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            model_cls.setup_anndata(
                adata, n_neighbors=case["n_neighbors"], n_top_genes=case["n_top_genes"], n_pcs=case["n_pcs"]
            )
            model = model_cls(adata, n_clusters=case["n_clusters"], **SMALL[model_cls])
            model.train(max_epochs=1, batch_size=case["batch_size"], enable_progress_bar=False)
            z = model.get_latent_representation()
            soft = model.predict(soft=True)
    except Exception as err:  # noqa: BLE001 - the property is about which errors are acceptable
        assert _raised_by_scdmac(err) and str(err), "".join(traceback.format_exception(err))
    else:
        k = model.n_clusters_
        assert z.shape[0] == adata.n_obs and np.isfinite(z).all()
        assert soft.shape == (adata.n_obs, k) and np.allclose(soft.sum(1), 1, atol=1e-4)
        assert case["n_clusters"] is None or k == case["n_clusters"]
        assert adata.obs[f"{model_cls._prefix}_cluster"].shape == (adata.n_obs,)
        # fewer clusters than asked for is never silent
        kept = int((np.bincount(model.predict(), minlength=k) >= 2).sum())
        assert kept == k or any("clusters asked for" in str(w.message) for w in said), (kept, k)
    # the user's matrix is never changed, whatever happened
    assert adata.X is X
    if sp.issparse(X):
        assert X.format == before.format and (X != before).nnz == 0 or np.isnan(before.data).any()
    else:
        assert X.flags.f_contiguous == before.flags.f_contiguous
        assert np.array_equal(X, before, equal_nan=True)


@pytest.mark.parametrize("model_cls", [SCDMAC, SCDSEC])
def test_generated_inputs_give_a_result_or_an_error_of_ours(model_cls):
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEARCH_SEED is None,  # the same cases on every CI run
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        database=None,
    )
    @given(cases())
    def run(case):
        _check(model_cls, case)

    if SEARCH_SEED is not None:
        run = seed(int(SEARCH_SEED))(run)
    run()


CLI_OPTIONS = {
    "--n-clusters": st.integers(-2, 60).map(str),
    "--max-epochs": st.sampled_from(["0", "1", "-1", "x"]),
    "--batch-size": st.sampled_from(["1", "2", "32", "0", "2.5"]),
    "--n-top-genes": st.sampled_from(["1", "2", "50", "0"]),
    "--n-neighbors": st.sampled_from(["0", "1", "5", "500"]),
    "--seed": st.sampled_from(["0", "-1", "7", "99999999999"]),
    "--layer": st.sampled_from(["counts", "X", "raw"]),
    "--model": st.sampled_from(["scdmac", "scdsec", "other"]),
    "--cluster-init": st.sampled_from(["kmeans", "leiden", "none"]),
}


@pytest.fixture(scope="module")
def cli_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz_cli") / "in.h5ad"
    scdmac.data.simulate(n_cells=80, n_genes=40, n_clusters=3, seed=0).write_h5ad(path)
    return path


@pytest.mark.filterwarnings("ignore:.*clusters asked for:UserWarning")  # expected for large --n-clusters
def test_generated_command_lines_exit_cleanly(cli_input, tmp_path_factory, capsys):
    """Any combination of options: exit 0 with the output written, or 2 with no output; never a traceback."""
    from scdmac._cli import main

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=SEARCH_SEED is None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(
        st.dictionaries(st.sampled_from(sorted(CLI_OPTIONS)), st.none(), max_size=4).flatmap(
            lambda keys: st.fixed_dictionaries({k: CLI_OPTIONS[k] for k in keys})
        )
    )
    def run(options):
        out = tmp_path_factory.mktemp("out") / "o.h5ad"
        argv = ["cluster", str(cli_input), str(out), "--no-progress", "--max-epochs", "1"]
        for key, value in options.items():
            argv += [key, value]
        status = main(argv)
        err = capsys.readouterr().err
        assert status in (0, 2), err
        assert "Traceback" not in err
        assert out.exists() == (status == 0)
        assert [p.name for p in out.parent.iterdir()] == (["o.h5ad"] if status == 0 else [])

    if SEARCH_SEED is not None:
        run = seed(int(SEARCH_SEED))(run)
    run()
