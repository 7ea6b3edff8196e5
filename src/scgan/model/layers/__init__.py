"""Reusable neural-network blocks."""
from scgan.model.layers.mscam import MSCAM

__all__ = ["MSCAM"]
