"""Registry keys and the AnnData keys the package writes."""

from __future__ import annotations

from typing import NamedTuple


class _RegistryKeys(NamedTuple):
    X_KEY: str = "X"
    INDICES_KEY: str = "ind_x"
    NEIGHBORS_KEY: str = "knn_indices"
    PARTITION_KEY: str = "partition"


REGISTRY_KEYS = _RegistryKeys()
