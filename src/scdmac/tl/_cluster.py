"""``scdmac.tl.scdmac`` and ``scdmac.tl.scdsec``: set up, train and write results in one call."""

from __future__ import annotations

from anndata import AnnData

_DOC = """Cluster raw counts with :class:`~scdmac.model.{model}` and write the results into ``adata``.

Writes ``obsm["X_{prefix}"]``, ``obs["{prefix}_cluster"]`` and ``obsm["{prefix}_soft"]`` (keys
changeable through ``model_kwargs``), plus the keys :meth:`~scdmac.model.{model}.setup_anndata`
adds.

Parameters
----------
adata
    Cells × genes AnnData of raw counts.
n_clusters
    Number of clusters (``None``: estimated).
layer
    Layer holding the raw counts (``None``: ``adata.X``).
seed
    Sets ``scvi.settings.seed`` first (``None`` leaves it alone).
setup_kwargs, model_kwargs, train_kwargs
    Passed to ``setup_anndata``, the model and ``train``.
copy
    Work on a copy and return it, with the model, instead of changing ``adata``.

Returns
-------
The trained model, or ``(adata_copy, model)`` with ``copy=True``.
"""


def _run(model_cls, adata: AnnData, n_clusters, layer, setup_kwargs, model_kwargs, train_kwargs, seed, copy):
    import scvi

    adata = adata.copy() if copy else adata
    if seed is not None:
        scvi.settings.seed = seed
    model_cls.setup_anndata(adata, layer=layer, **(setup_kwargs or {}))
    model = model_cls(adata, n_clusters=n_clusters, **(model_kwargs or {}))
    model.train(**(train_kwargs or {}))
    return (adata, model) if copy else model


def scdmac(
    adata: AnnData,
    n_clusters: int | None = None,
    layer: str | None = None,
    seed: int | None = 0,
    setup_kwargs: dict | None = None,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
    copy: bool = False,
):
    from ..model import SCDMAC

    return _run(SCDMAC, adata, n_clusters, layer, setup_kwargs, model_kwargs, train_kwargs, seed, copy)


def scdsec(
    adata: AnnData,
    n_clusters: int | None = None,
    layer: str | None = None,
    seed: int | None = 0,
    setup_kwargs: dict | None = None,
    model_kwargs: dict | None = None,
    train_kwargs: dict | None = None,
    copy: bool = False,
):
    from ..model import SCDSEC

    return _run(SCDSEC, adata, n_clusters, layer, setup_kwargs, model_kwargs, train_kwargs, seed, copy)


scdmac.__doc__ = _DOC.format(model="SCDMAC", prefix="scdmac")
scdsec.__doc__ = _DOC.format(model="SCDSEC", prefix="scdsec")
