"""``scdmac.tl.scdmac``: set up, train and write results in one call."""

from __future__ import annotations

from anndata import AnnData


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
    """Cluster raw counts with :class:`~scdmac.model.SCDMAC` and write the results into ``adata``.

    Writes ``obsm["X_scdmac"]``, ``obs["scdmac_cluster"]`` and ``obsm["scdmac_soft"]`` (keys
    changeable through ``model_kwargs``), plus the keys :meth:`~scdmac.model.SCDMAC.setup_anndata`
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
    from ..model import SCDMAC

    return _run(SCDMAC, adata, n_clusters, layer, setup_kwargs, model_kwargs, train_kwargs, seed, copy)
