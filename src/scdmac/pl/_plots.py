"""``scdmac.pl``: figures people would rather look at than read, following ``sc.pl`` conventions.

Every function takes ``show`` (call ``plt.show()`` and return ``None``; by default only in an
interactive session), ``save`` (write the figure to this path) and ``ax`` (draw into it); otherwise it
returns the matplotlib object it drew.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
        Scanpy's forms work too: ``True`` writes ``<function><format>`` into ``sc.settings.figdir``
        (format ``sc.settings.file_format_figs``), and a name starting with ``_`` or ``.`` is appended
        to the function's name there (``save="_pbmc.png"``).
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


def _save_path(save: str | Path | bool | None, name: str) -> Path | None:
    """Where ``save`` asks the figure of the function ``name`` to go: a path, or scanpy's forms (see above)."""
    if save is None or save is False:
        return None
    if save is True or (isinstance(save, str) and save[:1] in ("_", ".") and Path(save).name == save):
        import scanpy as sc

        stem = name + ("" if save is True else str(save))
        if not Path(stem).suffix or save is True:
            stem += "." + str(sc.settings.file_format_figs).lstrip(".")
        folder = Path(sc.settings.figdir)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / stem
    if not isinstance(save, str | Path):
        raise TypeError(f"save must be a file path, True or a scanpy-style suffix such as '_name.png', got {save!r}.")
    return Path(save)


def _finish(fig: Figure, show: bool | None, save: str | Path | bool | None, name: str) -> bool:
    """Save and maybe show ``fig`` (drawn by the function ``name``); ``True`` when the caller should return it."""
    import matplotlib
    import matplotlib.pyplot as plt

    path = _save_path(save, name)
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    # sc.pl's autoshow, but returning the objects where nothing would be displayed
    if show is None:
        show = matplotlib.is_interactive()
    if show:
        plt.show()
        return False
    return True


# the keys each model's ``write_results`` (called by ``train()``) fills: soft assignments, labels
_MODEL_KEYS: dict[str, tuple[str, str]] = {
    "SCDMAC": ("scdmac_soft", "scdmac_cluster"),
    "SCDSEC": ("scdsec_soft", "scdsec_cluster"),
}


def _model_key(adata: AnnData, which: Literal["soft", "cluster"], argument: str) -> str:
    """The soft-assignment (``obsm``) or cluster (``obs``) key of the one model whose results ``adata`` holds."""
    column = 0 if which == "soft" else 1
    slot, where = (adata.obsm, "obsm") if which == "soft" else (adata.obs, "obs")
    # the models' own keys, and those that scdmac.tl wrote under a key_added (recorded in uns)
    written = dict(_MODEL_KEYS)
    for prefix, entry in adata.uns.items():
        model = entry.get("params", {}).get("model") if isinstance(entry, dict) else None
        if model in _MODEL_KEYS and (f"{prefix}_soft", f"{prefix}_cluster") not in written.values():
            written[f"{model} (key_added={prefix!r})"] = (f"{prefix}_soft", f"{prefix}_cluster")
    looked_for = [keys[column] for keys in written.values()]
    found = [(model, keys[column]) for model, keys in written.items() if keys[column] in slot]
    if len(found) > 1:
        held = " and ".join(f"{model} ({where}[{key!r}])" for model, key in found)
        choices = " or ".join(f"{argument}={key!r}" for _, key in found)
        raise ValueError(f"adata holds the results of two models, {held}: pass {choices} to choose one.")
    if not found:
        raise KeyError(
            f"adata.{where} holds none of {looked_for}, the keys that SCDMAC's and SCDSEC's model.train() "
            f"and scdmac.tl write: train a model on this AnnData first, or pass {argument}= to name another key."
        )
    return found[0][1]


def _cluster_key_for(soft_key: str) -> str:
    """The cluster key written with ``soft_key`` (``"<prefix>_soft"`` goes with ``"<prefix>_cluster"``)."""
    for soft, cluster in _MODEL_KEYS.values():
        if soft_key == soft:
            return cluster
    return f"{soft_key.removesuffix('_soft')}_cluster"


def _categories(labels: pd.Series, drop_unused: bool = False) -> list:
    """A labeling's groups in order: a categorical's categories (empty ones too), else its sorted values."""
    if isinstance(labels.dtype, pd.CategoricalDtype):
        used = set(labels.dropna())
        return [c for c in labels.cat.categories if not drop_unused or c in used]
    values = list(pd.unique(labels.dropna()))
    try:  # numbers, and numbers written as strings, in numeric order ("2" before "10")
        return sorted(values, key=float)
    except (TypeError, ValueError):
        return sorted(values, key=str)


def _cluster_tick(category, n_cells: int) -> str:
    """Tick label of a cluster; an empty one (a category without cells) is marked, the same in every plot."""
    return str(category) if n_cells else f"{category} (empty)"


def _stage_metrics(model) -> dict[str, dict[str, np.ndarray]]:
    """``{stage: {metric: values per epoch}}`` in training order, from a model or its history.

    History keys are ``{stage}_{metric}``; a model's declared stages split them (a metric name may hold
    ``_``, as in ``mask_bce``), a bare history is split at the first ``_``.
    """
    history = model if isinstance(model, Mapping) else (getattr(model, "history", None) or {})
    declared = [getattr(s, "name", s) for s in getattr(model, "stages", None) or []]
    declared = [s for s in declared if isinstance(s, str)]
    stages: dict[str, dict[str, np.ndarray]] = {s: {} for s in declared}
    for key, frame in history.items():
        prefixes = [s for s in sorted(declared, key=len, reverse=True) if key.startswith(f"{s}_")]
        stage, metric = (prefixes[0], key[len(prefixes[0]) + 1 :]) if prefixes else key.partition("_")[::2]
        if metric and len(frame):
            stages.setdefault(stage, {})[metric] = np.asarray(frame, dtype=float).ravel()
    return {stage: metrics for stage, metrics in stages.items() if metrics}


@_doc_show_save_ax
def training_curves(
    model,
    stages: str | Sequence[str] | None = None,
    keys: str | Sequence[str] | None = None,
    *,
    log_y: bool = False,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    ax: Axes | None = None,
) -> Figure | Axes | None:
    """Per-epoch losses of each training stage, one panel per stage and logged term.

    The terms differ in scale by orders of magnitude (a summed ZINB loss next to a KL divergence), so
    each has its own panel and y axis. A stage's panels share its colour and start a new row; panel
    titles read ``"{stage}: {term}"``. ``label_change`` is the fraction of cells whose cluster changed
    (the clustering stage's stopping criterion), ``nonempty`` the number of clusters holding cells.

    Parameters
    ----------
    model
        A trained :class:`~scdmac.model.SCDMAC` or :class:`~scdmac.model.SCDSEC`, or its
        ``model.history`` (a dict with keys ``{stage}_{term}``).
    stages
        Stages to draw (default: every stage with history, in training order).
    keys
        Terms to draw, e.g. ``["loss", "kl"]`` (default: all each stage logged); a stage that logged
        none of them is left out unless named in ``stages``.
    log_y
        Logarithmic y axes (values of zero are not drawn; a panel without positive values stays linear).
    {show_save_ax}
        Draw into this axes; it holds one panel, so ``stages`` and ``keys`` must select one term.

    Returns
    -------
    :class:`~matplotlib.figure.Figure` or :class:`~matplotlib.axes.Axes` or None
        The figure with one axes per panel (stage by stage, in the order of ``keys`` or as logged), or
        ``ax`` when given; ``None`` when shown.

    Examples
    --------
    >>> model.train()  # doctest: +SKIP
    >>> fig = scdmac.pl.training_curves(model, show=False)  # doctest: +SKIP
    >>> scdmac.pl.training_curves(model, keys=["loss", "kl"], log_y=True)  # doctest: +SKIP
    >>> scdmac.pl.training_curves(model.history, stages="cluster", keys="kl")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    found = _stage_metrics(model)
    if not found:
        empty = "The history is empty" if isinstance(model, Mapping) else f"{type(model).__name__} has no history"
        raise ValueError(f"{empty}: run model.train() first.")
    named = stages is not None
    stages = list(found) if stages is None else [stages] if isinstance(stages, str) else list(stages)
    keys = [keys] if isinstance(keys, str) else None if keys is None else list(keys)  # a str is one key
    missing = [s for s in stages if s not in found]
    if missing:
        raise ValueError(
            f"No history for stage(s) {missing}: train them first (model.train(stages=...)) or choose "
            f"from the stages with history, {list(found)}."
        )
    panels: dict[str, list[str]] = {}
    for stage in stages:
        logged = found[stage]
        terms = list(logged) if keys is None else [k for k in keys if k in logged]
        if terms:
            panels[stage] = terms
        elif named:
            raise ValueError(f"Stage {stage!r} logged none of {keys}; it logged {list(logged)}.")
    unknown = [k for k in keys or [] if not any(k in terms for terms in panels.values())]
    if unknown or not panels:
        logged_terms = sorted({t for s in stages for t in found[s]})
        raise ValueError(f"The stages {stages} logged none of {unknown or keys}; they logged {logged_terms}.")
    n_panels = sum(len(terms) for terms in panels.values())
    if ax is not None and n_panels != 1:
        raise ValueError(
            f"`ax` holds one panel but the selection has {n_panels} (one per stage and term): pass one "
            "stage and one key, e.g. stages='cluster', keys='loss', or leave `ax` out."
        )
    colours = {stage: f"C{i}" for i, stage in enumerate(found)}  # a stage keeps its colour when chosen alone
    if ax is None:
        ncols = min(4, max(len(terms) for terms in panels.values()))
        rows = {stage: -(-len(terms) // ncols) for stage, terms in panels.items()}  # each stage starts a row
        fig, grid = plt.subplots(
            sum(rows.values()), ncols, figsize=(2.9 * ncols, 2.3 * sum(rows.values())), squeeze=False
        )
        axes: list[Axes] = []
        row = 0
        for stage, terms in panels.items():
            cells = list(grid[row : row + rows[stage]].ravel())
            axes += cells[: len(terms)]
            for spare in cells[len(terms) :]:
                spare.remove()
            row += rows[stage]
    else:
        fig, axes = _root_figure(ax), [ax]
    for panel, (stage, term) in zip(axes, [(s, t) for s, terms in panels.items() for t in terms], strict=True):
        values = found[stage][term]
        epochs = np.arange(1, len(values) + 1)
        panel.plot(epochs, values, color=colours[stage], marker="o" if len(values) < 20 else None, label=term)
        panel.set_title(f"{stage}: {term}", fontsize="medium")
        panel.set_xlabel("epoch")
        panel.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log_y and np.any(values > 0):
            panel.set_yscale("log")
    if ax is None:
        fig.tight_layout()
    if _finish(fig, show, save, "training_curves"):
        return ax if ax is not None else fig
    return None


def _soft(adata: AnnData, soft_key: str | None) -> tuple[str, np.ndarray]:
    """A model's soft assignments (cells × clusters): ``soft_key``, or those of the model that wrote ``adata``."""
    if soft_key is None:
        soft_key = _model_key(adata, "soft", "soft_key")
    if soft_key not in adata.obsm:
        raise KeyError(
            f"adata.obsm has no {soft_key!r}: train a model on this AnnData first "
            f"(soft assignments in obsm: {[k for k in adata.obsm if k.endswith('_soft')]})."
        )
    soft = np.asarray(adata.obsm[soft_key], dtype=float)
    if soft.ndim != 2 or soft.shape[1] < 1:
        raise ValueError(f"adata.obsm[{soft_key!r}] must be cells × clusters, got shape {soft.shape}.")
    return soft_key, soft


def _labels(adata: AnnData, soft_key: str, soft: np.ndarray, cluster_key: str | None) -> tuple[str, pd.Series]:
    """The cluster labels written with ``soft_key``, checked to hold one category per soft column."""
    if cluster_key is None:
        cluster_key = _cluster_key_for(soft_key)
        if cluster_key not in adata.obs:
            raise KeyError(
                f"adata.obs has no {cluster_key!r}, the labels written with {soft_key!r}: pass cluster_key= "
                f"(columns: {list(adata.obs.columns)})."
            )
    elif cluster_key not in adata.obs:
        raise KeyError(f"adata.obs has no {cluster_key!r}; columns: {list(adata.obs.columns)}.")
    labels = adata.obs[cluster_key]
    n_categories = len(_categories(labels))
    if n_categories != soft.shape[1]:
        raise ValueError(
            f"adata.obs[{cluster_key!r}] has {n_categories} clusters but adata.obsm[{soft_key!r}] has "
            f"{soft.shape[1]} columns: they must come from the same model (model.write_results(adata) writes "
            "both, every cluster a category even when it holds no cell)."
        )
    return cluster_key, labels


@_doc_show_save_ax
def assignment_confidence(
    adata: AnnData,
    basis: str = "umap",
    soft_key: str | None = None,
    *,
    cluster_key: str | None = None,
    per_cluster: bool = False,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    ax: Axes | None = None,
    **kwargs,
) -> Axes | None:
    """Each cell's largest soft-assignment value, on an embedding or per cluster.

    Low values mark cells between clusters (``1/k`` is no preference at all). Nothing is written into
    ``adata``.

    Parameters
    ----------
    adata
        AnnData with ``obsm[soft_key]``, and ``obsm[f"X_{basis}"]`` (on an embedding) or
        ``obs[cluster_key]`` (``per_cluster``).
    basis
        Embedding to draw on (``"umap"`` reads ``obsm["X_umap"]``); not used with ``per_cluster``.
    soft_key
        Soft assignments (cells × clusters). By default those of the model that wrote ``adata``'s
        results: ``"scdmac_soft"`` (SCDMAC) or ``"scdsec_soft"`` (SCDSEC); name one when both are there.
    cluster_key
        Cluster labels for ``per_cluster``, one category per column of the soft assignments (default:
        those written with ``soft_key``, ``"scdmac_cluster"`` or ``"scdsec_cluster"``; for another
        ``"<prefix>_soft"``, ``"<prefix>_cluster"``).
    per_cluster
        Instead of the embedding, a box per cluster of its cells' values, every category in order; a
        cluster without cells keeps its place, marked ``(empty)``.
    {show_save_ax}
        Axes to draw into (default: a new figure).
    **kwargs
        On an embedding, passed to :func:`scanpy.pl.embedding` (e.g. ``size``, ``cmap``; colours span 0
        to 1 unless ``vmin``/``vmax`` say otherwise); per cluster, to
        :meth:`~matplotlib.axes.Axes.boxplot`.

    Returns
    -------
    :class:`~matplotlib.axes.Axes` or None
        The axes drawn into; ``None`` when shown.

    Examples
    --------
    >>> sc.pp.neighbors(adata, use_rep="X_scdmac")  # doctest: +SKIP
    >>> sc.tl.umap(adata)  # doctest: +SKIP
    >>> scdmac.pl.assignment_confidence(adata, basis="umap")  # doctest: +SKIP
    >>> scdmac.pl.assignment_confidence(adata, per_cluster=True)  # doctest: +SKIP
    """
    if per_cluster:
        return _confidence_per_cluster(adata, soft_key, cluster_key, show=show, save=save, ax=ax, **kwargs)
    import scanpy as sc

    basis = basis.removeprefix("X_")  # scanpy takes "umap" and "X_umap" alike
    key = f"X_{basis}"
    if key not in adata.obsm:
        raise KeyError(f"adata.obsm has no {key!r}: compute the embedding first (e.g. sc.tl.{basis}(adata)).")
    soft_key, soft = _soft(adata, soft_key)
    # a bare AnnData holding only what is drawn: the user's object gets no new column
    view = AnnData(
        obs=pd.DataFrame({"confidence": soft.max(1)}, index=adata.obs_names),
        obsm={key: np.asarray(adata.obsm[key])},
    )
    kwargs.setdefault("cmap", "viridis")
    kwargs.setdefault("vmin", 0.0)
    kwargs.setdefault("vmax", 1.0)
    ax = sc.pl.embedding(view, basis=basis, color="confidence", ax=ax, show=False, **kwargs)
    ax.set_title(f"largest soft assignment ({soft_key})")
    if _finish(_root_figure(ax), show, save, "assignment_confidence"):
        return ax
    return None


def _confidence_per_cluster(
    adata: AnnData,
    soft_key: str | None,
    cluster_key: str | None,
    *,
    show: bool | None,
    save: str | Path | bool | None,
    ax: Axes | None,
    **kwargs,
) -> Axes | None:
    """:func:`assignment_confidence` with ``per_cluster=True``."""
    import matplotlib.pyplot as plt

    soft_key, soft = _soft(adata, soft_key)
    cluster_key, labels = _labels(adata, soft_key, soft, cluster_key)
    categories = _categories(labels)
    confidence = soft.max(1)
    values = np.asarray(labels, dtype=object)
    groups = [confidence[values == category] for category in categories]
    if ax is None:
        _, ax = plt.subplots(figsize=(0.5 * len(categories) + 2.0, 3.0))
    filled = [i for i, group in enumerate(groups) if len(group)]
    if filled:  # an empty group has no box (matplotlib would draw NaN statistics)
        kwargs.setdefault("widths", 0.6)
        if kwargs.setdefault("patch_artist", True):  # boxes as patches (``ax.patches``), filled grey
            kwargs.setdefault("boxprops", {"facecolor": "0.85"})
        ax.boxplot([groups[i] for i in filled], positions=filled, **kwargs)
    ax.axhline(1.0 / soft.shape[1], color="0.6", linestyle="--", linewidth=1)  # no preference
    ticks = [_cluster_tick(c, len(g)) for c, g in zip(categories, groups, strict=True)]
    ax.set_xticks(range(len(categories)), ticks, rotation=90 if max(map(len, ticks)) > 3 else 0)
    ax.set_xlim(-0.6, len(categories) - 0.4)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(cluster_key)
    ax.set_ylabel("largest soft assignment")
    ax.set_title(f"largest soft assignment per cluster ({soft_key})")
    if _finish(_root_figure(ax), show, save, "assignment_confidence"):
        return ax
    return None


def _agreement_table(
    clusters, reference, normalize: Literal["cluster", "reference"] | None = "cluster"
) -> pd.DataFrame:
    """Clusters × reference labels: counts, or fractions per cluster (rows) or per reference label (columns).

    Rows are every cluster category, a cluster without cells too (zeros; no fractions, ``NaN``); columns
    the reference labels that cells carry.
    """
    clusters, reference = pd.Series(clusters).reset_index(drop=True), pd.Series(reference).reset_index(drop=True)
    table = pd.crosstab(
        pd.Series(np.asarray(clusters, dtype=object), name="cluster"),
        pd.Series(np.asarray(reference, dtype=object), name="reference"),
    ).reindex(
        index=pd.Index(_categories(clusters), name="cluster"),
        columns=pd.Index(_categories(reference, drop_unused=True), name="reference"),
        fill_value=0,
    )
    if normalize == "cluster":
        return table.div(table.sum(1).replace(0, np.nan), axis=0)
    if normalize == "reference":
        return table.div(table.sum(0).replace(0, np.nan), axis=1)
    if normalize is not None:
        raise ValueError(f"normalize must be 'cluster', 'reference' or None, got {normalize!r}.")
    return table


@_doc_show_save_ax
def label_agreement(
    adata: AnnData,
    cluster_key: str | None = None,
    reference_key: str = "cell_type",
    *,
    normalize: Literal["cluster", "reference"] | None = "cluster",
    cmap: str = "viridis",
    annotate: bool | None = None,
    show: bool | None = None,
    save: str | Path | bool | None = None,
    ax: Axes | None = None,
) -> Axes | None:
    """Heatmap of clusters against a reference labeling, with ARI and NMI in the title.

    Parameters
    ----------
    adata
        AnnData with both labelings in ``obs``.
    cluster_key
        Clusters (rows): every category, in order; a cluster without cells keeps its row, marked
        ``(empty)`` (grey when fractions per cluster are shown). By default the labels of the model
        that wrote ``adata``'s results, ``"scdmac_cluster"`` or ``"scdsec_cluster"``; name one when
        both are there.
    reference_key
        Reference labels (columns), e.g. published cell types; labels no cell carries are left out.
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
    >>> scdmac.pl.label_agreement(adata, reference_key="cell_type")  # doctest: +SKIP
    >>> scdmac.pl.label_agreement(adata, "scdsec_cluster", "cell_type", normalize="reference")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from ..metrics import agreement

    if cluster_key is None:
        cluster_key = _model_key(adata, "cluster", "cluster_key")
    for key in (cluster_key, reference_key):
        if key not in adata.obs:
            raise KeyError(f"adata.obs has no {key!r}; columns: {list(adata.obs.columns)}.")
    clusters, reference = adata.obs[cluster_key], adata.obs[reference_key]
    table = _agreement_table(clusters, reference, normalize)
    sizes = clusters.value_counts().reindex(table.index, fill_value=0)
    if ax is None:
        _, ax = plt.subplots(figsize=(0.45 * table.shape[1] + 2.5, 0.4 * table.shape[0] + 1.8))
    # an empty cluster's fractions are undefined (NaN): drawn grey, not as zeros
    image = ax.imshow(table.to_numpy(dtype=float), cmap=plt.get_cmap(cmap).with_extremes(bad="0.85"), aspect="auto")
    ax.set_xticks(range(table.shape[1]), [str(c) for c in table.columns], rotation=90)
    ax.set_yticks(range(table.shape[0]), [_cluster_tick(r, sizes[r]) for r in table.index])
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
    if _finish(_root_figure(ax), show, save, "label_agreement"):
        return ax
    return None
