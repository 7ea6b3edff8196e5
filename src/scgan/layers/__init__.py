"""Reusable neural-network blocks."""
from scgan.layers.mscam import MSCAM

__all__ = ["MSCAM"]
