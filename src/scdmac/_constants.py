"""Registry keys and the AnnData keys the package writes."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    INDICES_KEY: str = "ind_x"
    NEIGHBORS_KEY: str = "knn_indices"


REGISTRY_KEYS = _RegistryKeys()

#: Column of ``adata.obs`` holding each cell's row number (registered so minibatches carry it).
INDICES_OBS_KEY = "_scdmac_indices"
