"""Scanpy-style one-liners."""

from ._cluster import scdmac, scdsec

__all__ = ["scdmac", "scdsec"]
