"""``scdmac.pl``: figures people would rather look at than read, following ``sc.pl`` conventions.

Every function takes ``show`` (call ``plt.show()`` and return ``None``; by default only in an
interactive session), ``save`` (write the figure to this path) and ``ax`` (draw into it); otherwise it
returns the matplotlib object it drew.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from anndata import AnnData

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


_DOC_SHOW_SAVE_AX = """\
show
        Call :func:`matplotlib.pyplot.show` and return ``None``. By default only in an interactive
        session (:func:`matplotlib.is_interactive`), so scripts and tests get the plot objects back.
    save
        Write the figure to this path; the suffix picks the format (``.png``, ``.pdf``, ``.svg``).
    ax"""


def _doc_show_save_ax(fn):
    """Fill the shared text of ``show``, ``save`` and ``ax`` into a docstring (as ``sc.pl`` does)."""
    # str.replace, not str.format: the docstrings hold other braces (``obsm[f"X_{basis}"]``)
    if fn.__doc__:  # None under ``python -OO``
        fn.__doc__ = fn.__doc__.replace("{show_save_ax}", _DOC_SHOW_SAVE_AX)
    return fn


def _root_figure(ax: Axes) -> Figure:
    """The figure that saves and shows ``ax`` (the root one when ``ax`` sits in a subfigure)."""
    from matplotlib.figure import Figure

    fig = ax.figure
    root = getattr(fig, "figure", fig)  # a subfigure's ``figure`` is its root figure
    if not isinstance(root, Figure):
        raise TypeError(f"The axes is not on a matplotlib figure (got {type(root).__name__}).")
    return root


def _finish(fig: Figure, show: bool | None, save: str | Path | None) -> bool:
    """Save and maybe show ``fig``; ``True`` when the caller should return its plot objects."""
    import matplotlib
    import matplotlib.pyplot as plt

    if save is not None:
        fig.savefig(save, dpi=150, bbox_inches="tight")
    # sc.pl's autoshow, but returning the objects where nothing would be displayed
    if show is None:
        show = matplotlib.is_interactive()
    if show:
        plt.show()
        return False
    return True


def _stage_metrics(history: dict[str, pd.DataFrame]) -> dict[str, dict[str, np.ndarray]]:
    """``{stage: {metric: values per epoch}}`` from a model's history (keys ``{stage}_{metric}``)."""
    stages: dict[str, dict[str, np.ndarray]] = {}
    for key, frame in history.items():
        stage, _, metric = key.partition("_")
        if metric and len(frame):
            stages.setdefault(stage, {})[metric] = frame.to_numpy(dtype=float).ravel()
    return stages


@_doc_show_save_ax
def training_curves(
    model,
    stages: str | Sequence[str] | None = None,
    keys: str | Sequence[str] | None = None,
    *,
    log_y: bool = False,
    show: bool | None = None,
    save: str | Path | None = None,
    ax: Axes | None = None,
) -> Figure | Axes | None:
    """Per-epoch losses of each training stage, one panel per stage.

    Each metric the stage logged (``model.history`` keys ``{stage}_{metric}``) is one line. The terms
    differ in scale (a summed ZINB loss next to a KL divergence), so choose them with ``keys`` or use
    ``log_y``; ``label_change`` is the fraction of cells whose cluster changed, the clustering stage's
    stopping criterion.

    Parameters
    ----------
    model
        A trained :class:`~scdmac.model.SCDMAC` or :class:`~scdmac.model.SCDSEC`.
    stages
        Stages to draw (default: every stage in ``model.history``, in training order).
    keys
        Metrics to draw per stage, e.g. ``["loss", "kl"]`` (default: all the stage logged).
    log_y
        Logarithmic loss axis (values of zero are not drawn).
    {show_save_ax}
        Draw into this axes; it holds one panel, so ``stages`` must name one stage.

    Returns
    -------
    :class:`~matplotlib.figure.Figure` or :class:`~matplotlib.axes.Axes` or None
        The figure with one axes per stage, or ``ax`` when given; ``None`` when shown.

    Examples
    --------
    >>> model.train()  # doctest: +SKIP
    >>> fig = scdmac.pl.training_curves(model, log_y=True, show=False)  # doctest: +SKIP
    >>> scdmac.pl.training_curves(model, stages="cluster", keys=["loss", "kl"])  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    found = _stage_metrics(model.history or {})
    if not found:
        raise ValueError(f"{type(model).__name__} has no training history: run model.train() first.")
    stages = list(found) if stages is None else [stages] if isinstance(stages, str) else list(stages)
    keys = [keys] if isinstance(keys, str) else keys  # a bare string would match metrics by substring
    missing = [s for s in stages if s not in found]
    if missing:
        raise ValueError(
            f"No history for stage(s) {missing}: train them first (model.train(stages=...)) or choose "
            f"from the stages with history, {list(found)}."
        )
    if ax is not None and len(stages) != 1:
        raise ValueError(f"`ax` holds one panel but {len(stages)} stages were asked for: pass `stages=` one stage.")
    panels: list[Axes]
    if ax is None:
        fig, grid = plt.subplots(1, len(stages), figsize=(3.6 * len(stages), 3.0), squeeze=False)
        panels = list(grid[0])
    else:
        fig, panels = _root_figure(ax), [ax]
    for stage, panel in zip(stages, panels, strict=True):
        metrics = found[stage]
        names = [k for k in metrics if keys is None or k in keys]
        if not names:
            raise ValueError(f"Stage {stage!r} logged none of {list(keys or [])}; it logged {list(metrics)}.")
        for name in names:
            values = metrics[name]
            panel.plot(np.arange(1, len(values) + 1), values, marker="o" if len(values) < 20 else None, label=name)
        panel.set_title(stage)
        panel.set_xlabel("epoch")
        if log_y:
            panel.set_yscale("log")
        panel.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    if _finish(fig, show, save):
        return ax if ax is not None else fig
    return None


@_doc_show_save_ax
def assignment_confidence(
    adata: AnnData,
    basis: str = "umap",
    soft_key: str | None = None,
    *,
    show: bool | None = None,
    save: str | Path | None = None,
    ax: Axes | None = None,
    **kwargs,
) -> Axes | None:
    """Cells on an embedding coloured by their largest soft-assignment value.

    Low values mark cells between clusters. Nothing is written into ``adata``.

    Parameters
    ----------
    adata
        AnnData with ``obsm[f"X_{basis}"]`` and ``obsm[soft_key]``.
    basis
        Embedding to draw on (``"umap"`` reads ``obsm["X_umap"]``).
    soft_key
        Soft assignments written by a model; by default the one of ``"scdmac_soft"`` and
        ``"scdsec_soft"`` that ``adata`` holds (name it when it holds both).
    {show_save_ax}
        Axes to draw into (default: a new figure).
    **kwargs
        Passed to :func:`scanpy.pl.embedding` (e.g. ``size``, ``cmap``; colours span 0 to 1 unless
        ``vmin``/``vmax`` say otherwise).

    Returns
    -------
    :class:`~matplotlib.axes.Axes` or None
        The axes drawn into; ``None`` when shown.

    Examples
    --------
    >>> sc.pp.neighbors(adata, use_rep="X_scdmac")  # doctest: +SKIP
    >>> sc.tl.umap(adata)  # doctest: +SKIP
    >>> scdmac.pl.assignment_confidence(adata, basis="umap", soft_key="scdmac_soft")  # doctest: +SKIP
    """
    import scanpy as sc

    key = f"X_{basis}"
    if key not in adata.obsm:
        raise KeyError(f"adata.obsm has no {key!r}: compute the embedding first (e.g. sc.tl.{basis}(adata)).")
    if soft_key is None:
        written = [k for k in ("scdmac_soft", "scdsec_soft") if k in adata.obsm]
        if len(written) > 1:
            raise ValueError(f"adata holds the soft assignments of two models {written}: pass soft_key=...")
        soft_key = written[0] if written else "scdmac_soft"
    if soft_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {soft_key!r}: train a model on this AnnData first "
            f"(soft assignments in obsm: {[k for k in adata.obsm if k.endswith('_soft')]})."
        )
    # a bare AnnData holding only what is drawn: the user's object gets no new column
    view = AnnData(
        obs=pd.DataFrame({"confidence": np.asarray(adata.obsm[soft_key]).max(1)}, index=adata.obs_names),
        obsm={key: np.asarray(adata.obsm[key])},
    )
    kwargs.setdefault("cmap", "viridis")
    kwargs.setdefault("vmin", 0.0)
    kwargs.setdefault("vmax", 1.0)
    ax = sc.pl.embedding(view, basis=basis, color="confidence", ax=ax, show=False, **kwargs)
    ax.set_title(f"largest soft assignment ({soft_key})")
    if _finish(_root_figure(ax), show, save):
        return ax
    return None


def _agreement_table(
    clusters, reference, normalize: Literal["cluster", "reference"] | None = "cluster"
) -> pd.DataFrame:
    """Clusters × reference labels: counts, or fractions per cluster (rows) or per reference label (columns)."""
    table = pd.crosstab(
        pd.Series(np.asarray(clusters), name="cluster"), pd.Series(np.asarray(reference), name="reference")
    )
    if normalize == "cluster":
        return table.div(table.sum(1), axis=0)
    if normalize == "reference":
        return table.div(table.sum(0), axis=1)
    if normalize is not None:
        raise ValueError(f"normalize must be 'cluster', 'reference' or None, got {normalize!r}.")
    return table


@_doc_show_save_ax
def label_agreement(
    adata: AnnData,
    cluster_key: str = "scdmac_cluster",
    reference_key: str = "cell_type",
    *,
    normalize: Literal["cluster", "reference"] | None = "cluster",
    cmap: str = "viridis",
    annotate: bool | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    ax: Axes | None = None,
) -> Axes | None:
    """Heatmap of clusters against a reference labeling, with ARI and NMI in the title.

    Parameters
    ----------
    adata
        AnnData with both labelings in ``obs``.
    cluster_key
        Clusters (rows).
    reference_key
        Reference labels (columns), e.g. published cell types.
    normalize
        ``"cluster"``: each row shows where a cluster's cells sit among the reference labels (rows sum
        to 1); ``"reference"``: columns sum to 1; ``None``: cell counts.
    cmap
        Colour map.
    annotate
        Write the values into the cells (default: when the table has at most 20 × 20 entries).
    {show_save_ax}
        Axes to draw into (default: a new figure sized to the table).

    Returns
    -------
    :class:`~matplotlib.axes.Axes` or None
        The heatmap's axes; ``None`` when shown.

    Examples
    --------
    >>> scdmac.pl.label_agreement(adata, "scdmac_cluster", "cell_type", normalize="reference")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from ..metrics import agreement

    for key in (cluster_key, reference_key):
        if key not in adata.obs:
            raise KeyError(f"adata.obs has no {key!r}; columns: {list(adata.obs.columns)}.")
    clusters, reference = adata.obs[cluster_key], adata.obs[reference_key]
    table = _agreement_table(clusters, reference, normalize)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * table.shape[1] + 2.5, 0.4 * table.shape[0] + 1.8))
    image = ax.imshow(table.to_numpy(dtype=float), cmap=cmap, aspect="auto")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=90)
    ax.set_yticks(range(table.shape[0]), [str(r) for r in table.index])
    ax.set_xlabel(reference_key)
    ax.set_ylabel(cluster_key)
    if annotate is None:
        annotate = max(table.shape) <= 20
    if annotate:
        fmt = "{:.0f}" if normalize is None else "{:.2f}"
        for (i, j), value in np.ndenumerate(table.to_numpy(dtype=float)):
            if value > 0:
                # dark text on light cells of whatever colour map, light text on dark ones
                r, g, b, _ = image.cmap(image.norm(value))
                colour = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=6, color=colour)
    scores = agreement(reference, clusters)
    ax.set_title(f"ARI {scores['ari']:.3f}, NMI {scores['nmi']:.3f}")
    label = {"cluster": "fraction of cluster", "reference": f"fraction of {reference_key}"}.get(
        normalize or "", "cells"
    )
    ax.figure.colorbar(image, ax=ax, label=label, fraction=0.05)
    if _finish(_root_figure(ax), show, save):
        return ax
    return None
