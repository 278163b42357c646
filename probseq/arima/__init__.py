"""Seasonal ARIMA models with the exact likelihood of the differenced series."""

from probseq.arima.model import ARIMA

__all__ = ["ARIMA"]
