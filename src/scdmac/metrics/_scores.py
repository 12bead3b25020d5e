from __future__ import annotations

import numpy as np
import pandas as pd


def agreement(truth, labels) -> dict[str, float]:
    """Adjusted Rand index and normalised mutual information between two labelings.

    Parameters
    ----------
    truth, labels
        Array-likes of equal length (compared as strings).

    Returns
    -------
    dict
        ``{"ari": ..., "nmi": ...}``.
    """
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    truth = np.asarray(truth).astype(str)
    labels = np.asarray(labels).astype(str)
    return {"ari": adjusted_rand_score(truth, labels), "nmi": normalized_mutual_info_score(truth, labels)}


def best_match_f1(truth, labels) -> pd.Series:
    """For each reference type, the F1 score of the cluster that matches it best.

    A type counts as recovered when one cluster holds most of its cells and little else: ARI hardly
    moves when a type of a few dozen cells is merged away, this score does.

    Parameters
    ----------
    truth, labels
        Array-likes of equal length (compared as strings).

    Returns
    -------
    :class:`pandas.Series`
        F1 in ``[0, 1]`` per reference type, indexed by type.
    """
    table = pd.crosstab(np.asarray(truth).astype(str), np.asarray(labels).astype(str))
    both = table.to_numpy(dtype=np.float64)
    f1 = 2 * both / (both.sum(1, keepdims=True) + both.sum(0, keepdims=True))
    return pd.Series(f1.max(1), index=table.index, name="f1")
