"""Gaussian autoregressive models AR(p) with the exact stationary joint likelihood."""

from probseq.autoregressive.model import AutoRegressive

__all__ = ["AutoRegressive"]
