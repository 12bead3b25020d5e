"""``scdmac.tl.scdmac`` and ``scdmac.tl.scdsec``: cluster raw counts in one call, scanpy style."""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from collections.abc import Iterator

import numpy as np
from anndata import AnnData

_DOC = """Cluster raw counts with :class:`~scdmac.model.{model}` and write the results into ``adata``.

The model is set up, trained and used on a working AnnData that shares the counts; ``adata``
receives only the results, under ``key_added`` (``"{prefix}"`` gives the model's own keys):

- ``obsm["X_{{key_added}}"]``: the embedding (cells × latent dimensions, float32);
- ``obs["{{key_added}}_cluster"]``: cluster labels (categorical of strings ``"0"``, ``"1"``, ...);
- ``obsm["{{key_added}}_soft"]``: soft assignments (cells × clusters, rows sum to one);
- ``uns["{{key_added}}"]["params"]``: the arguments of this call and the number of clusters.

Global state is left as it was: the random state is set for the call only, and restored after.
Use the model API (:class:`~scdmac.model.{model}`) to keep the trained model.

Parameters
----------
adata
    Cells × genes AnnData of raw counts.
n_clusters
    Number of clusters (``None``: estimated from the pretrained embedding).
layer
    Layer holding the raw counts (``None``: ``adata.X``).
batch_key
    ``adata.obs`` column of each cell's sample (donor, library): its effects are removed (see
    ``{model}.setup_anndata``).
key_added
    Prefix of the keys written (see above).
random_state
    Seed of every random choice of the run (``scvi.settings.seed`` during the call); a numpy
    ``RandomState`` gives one, ``None`` draws one (recorded in ``params``).
setup_kwargs, model_kwargs, train_kwargs
    Passed to ``{model}.setup_anndata``, ``{model}(...)`` and ``train``.
copy
    Return a copy of ``adata`` with the results instead of writing into ``adata``.

Returns
-------
``None``, or the annotated copy when ``copy=True``.

Examples
--------
>>> import scdmac
>>> adata = scdmac.data.simulate(n_cells=500, n_genes=300, n_clusters=4)
>>> scdmac.tl.{prefix}(adata, n_clusters=4, layer="counts")  # doctest: +SKIP
>>> adata.obs["{prefix}_cluster"].value_counts()  # doctest: +SKIP
"""


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """``scvi.settings.seed = seed`` inside the block; every random state and seed setting restored after."""
    import scvi
    import torch

    from .._logging import quiet_loggers

    env = {k: os.environ.get(k) for k in ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "XLA_FLAGS")}
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    numpy_state, python_state, old_seed = np.random.get_state(), random.getstate(), scvi.settings.seed
    # Lightning announces every seeding ("Seed set to 0"); a tl call prints nothing of its own
    with (
        quiet_loggers("lightning.fabric.utilities.seed"),
        torch.random.fork_rng(devices=range(torch.cuda.device_count())),
    ):
        try:
            scvi.settings.seed = seed
            yield
        finally:
            scvi.settings.seed = old_seed  # None, or the user's seed (which reseeds; states restored next)
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _h5ad_safe(value):
    """``value`` in a form ``write_h5ad`` can store in ``uns``: tuples as lists, paths and objects as text."""
    if isinstance(value, dict):
        return {str(k): _h5ad_safe(v) for k, v in value.items()}
    if value is None or isinstance(value, str | bool | int | float | np.generic):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | bool | int | float | np.generic) for v in value):
        return list(value)
    return str(value)


def _seed_of(random_state) -> int:
    """An integer seed from scanpy's forms of ``random_state``: an int, a ``RandomState`` or ``None``."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))  # scanpy's None: not reproducible
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**31 - 1))
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer) or random_state < 0:
        raise ValueError(
            f"random_state must be a non-negative integer, a numpy RandomState or None, got {random_state!r}."
        )
    return int(random_state)


def _run(
    model_cls,
    adata: AnnData,
    n_clusters,
    layer,
    batch_key,
    key_added,
    random_state,
    setup_kwargs,
    model_kwargs,
    train_kwargs,
    copy,
) -> AnnData | None:
    import inspect

    from ..data._validate import check_covariates, check_trainer_kwargs, get_counts

    # a misspelt training argument is refused before setup's gene selection, PCA and kNN search
    own = set(inspect.signature(model_cls.train).parameters)
    check_trainer_kwargs({k: v for k, v in (train_kwargs or {}).items() if k not in own})
    model_kwargs = dict(model_kwargs or {})
    for key in ("latent_key", "cluster_key", "soft_key"):
        if key in model_kwargs:
            raise ValueError(f"Pass key_added instead of model_kwargs[{key!r}]: tl functions write under key_added.")
    if copy and adata.isbacked:
        raise ValueError("copy=True needs an AnnData in memory: pass adata.to_memory(), or copy=False.")
    setup_kwargs = dict(setup_kwargs or {})
    if batch_key is not None:
        setup_kwargs["batch_key"] = batch_key
    # a working AnnData sharing the counts: setup's registry and graph keys never reach the user's object;
    # it carries only the obs columns setup reads (the sample and covariates)
    covariates = list(setup_kwargs.get("categorical_covariate_keys") or [])
    with warnings.catch_warnings():  # its warnings come once, from setup_anndata below
        warnings.simplefilter("ignore", UserWarning)
        check_covariates(adata, setup_kwargs.get("batch_key"), covariates)  # errors named on the user's AnnData
    columns = [c for c in [setup_kwargs.get("batch_key"), *covariates] if c is not None]
    work = AnnData(X=get_counts(adata, layer), obs=adata.obs[columns].copy(), var=adata.var[[]].copy())
    seed = _seed_of(random_state)
    with _seeded(seed):
        model_cls.setup_anndata(work, **setup_kwargs)
        model = model_cls(work, n_clusters=n_clusters, **model_kwargs)
        model.train(**(train_kwargs or {}))
    out = adata.copy() if copy else adata
    prefix = model_cls._prefix
    out.obsm[f"X_{key_added}"] = work.obsm[f"X_{prefix}"]
    out.obs[f"{key_added}_cluster"] = work.obs[f"{prefix}_cluster"].values  # the categorical, by position
    out.obsm[f"{key_added}_soft"] = work.obsm[f"{prefix}_soft"]
    out.uns[key_added] = {
        "params": _h5ad_safe(
            {
                "model": model_cls.__name__,
                "n_clusters": int(model.n_clusters_),
                "n_clusters_requested": n_clusters,
                "layer": layer,
                "random_state": seed,
                "setup_kwargs": setup_kwargs,
                "model_kwargs": model_kwargs,
                "train_kwargs": {k: v for k, v in (train_kwargs or {}).items() if k != "callbacks"},
            }
        )
    }
    return out if copy else None


def _tool(model_name: str, prefix: str):
    """The ``tl`` function of one model (both share every argument; the docstring names the model)."""

    def tool(
        adata: AnnData,
        n_clusters: int | None = None,
        *,
        layer: str | None = None,
        batch_key: str | None = None,
        key_added: str = prefix,
        random_state: int | np.random.RandomState | None = 0,
        setup_kwargs: dict | None = None,
        model_kwargs: dict | None = None,
        train_kwargs: dict | None = None,
        copy: bool = False,
    ) -> AnnData | None:
        from .. import model

        model_cls = getattr(model, model_name)
        return _run(
            model_cls,
            adata,
            n_clusters,
            layer,
            batch_key,
            key_added,
            random_state,
            setup_kwargs,
            model_kwargs,
            train_kwargs,
            copy,
        )

    tool.__name__ = tool.__qualname__ = prefix
    tool.__doc__ = _DOC.format(model=model_name, prefix=prefix)
    return tool


scdmac = _tool("SCDMAC", "scdmac")
scdsec = _tool("SCDSEC", "scdsec")
