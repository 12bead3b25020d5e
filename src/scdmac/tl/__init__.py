"""Scanpy-style one-liners."""

from ._cluster import scdmac

__all__ = ["scdmac"]
