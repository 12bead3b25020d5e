from __future__ import annotations

import numpy as np


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
