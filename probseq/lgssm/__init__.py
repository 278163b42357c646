"""Linear-Gaussian state-space models: the Kalman filter likelihood, RTS smoother, forecasts."""

from probseq.lgssm.model import Forecast, LinearGaussianSSM, StatePosterior

__all__ = ["LinearGaussianSSM", "StatePosterior", "Forecast"]
