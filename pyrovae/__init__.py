"""pyrovae: variational autoencoders the Pyro way.

The generative model p(z) p(x|z) is a Pyro model, q(z|x) an amortized guide, and SVI trains both; models are
evaluated by importance-sampled estimates of log p(x) and a ladder of bounds. Any model/guide pair whose
per-datapoint sites live in ``pyro.plate("data", N)`` works with every trainer, estimator and evaluator here.
"""

from pyrovae import (
    analysis,
    data,
    devices,
    distributed,
    errors,
    estimators,
    handlers,
    infer,
    models,
    options,
    precision,
    results,
    runs,
    seeds,
    storage,
    tracking,
    train,
)
from pyrovae.analysis.anomaly import AnomalyScores, anomaly_scores
from pyrovae.analysis.comparison import Comparison, compare
from pyrovae.analysis.detection import Detection, detect, detection_table
from pyrovae.analysis.latent_usage import LatentStats, latent_stats
from pyrovae.data.datasets import VAEDataset, as_dataset, load
from pyrovae.data.source import DataSource
from pyrovae.errors import ConfigError, DataError, PyroVAEError, RankError, TrainingError
from pyrovae.estimators import (
    CIWAE,
    IWAE,
    MIWAE,
    PIWAE,
    RWS,
    STL,
    VIMCO,
    DReG,
    KLAnnealed,
    Renyi,
    TailAdaptiveELBO,
    TraceELBO,
    TraceGraphELBO,
    estimator,
)
from pyrovae.infer.annealing import AIS, ais
from pyrovae.infer.bidirectional import BDMC, bdmc
from pyrovae.infer.importance import LogLikelihood, log_likelihood
from pyrovae.infer.ladder import Bounds, bounds
from pyrovae.models.categorical import CategoricalVAE
from pyrovae.models.cvae import CVAE
from pyrovae.models.hvae import HVAE
from pyrovae.models.sbn import SBN
from pyrovae.models.ssvae import SSVAE
from pyrovae.models.vae import VAE
from pyrovae.runs.model_folder import load_model, save_model
from pyrovae.runs.run import Run, RunConfig, load_run
from pyrovae.tracking import MLflowLogger, TensorBoardLogger
from pyrovae.train.callbacks import Callback, FitState
from pyrovae.train.loop import FitResult, fit
from pyrovae.train.trainer import Trainer

__version__ = "0.1.0"


def __getattr__(name: str):
    """``pyrovae.plots``, imported (with matplotlib) when first used: ``import pyrovae`` works
    whatever matplotlib's environment."""
    if name == "plots":
        import importlib

        return importlib.import_module("pyrovae.plots")
    raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")


__all__ = [
    "AIS",
    "AnomalyScores",
    "BDMC",
    "Bounds",
    "CIWAE",
    "CVAE",
    "Callback",
    "CategoricalVAE",
    "Comparison",
    "ConfigError",
    "DReG",
    "DataError",
    "DataSource",
    "Detection",
    "FitResult",
    "FitState",
    "HVAE",
    "IWAE",
    "KLAnnealed",
    "LatentStats",
    "LogLikelihood",
    "MIWAE",
    "MLflowLogger",
    "PIWAE",
    "PyroVAEError",
    "RWS",
    "RankError",
    "Renyi",
    "Run",
    "RunConfig",
    "SBN",
    "SSVAE",
    "STL",
    "TailAdaptiveELBO",
    "TensorBoardLogger",
    "TraceELBO",
    "TraceGraphELBO",
    "Trainer",
    "TrainingError",
    "VAE",
    "VAEDataset",
    "VIMCO",
    "ais",
    "analysis",
    "anomaly_scores",
    "as_dataset",
    "bdmc",
    "bounds",
    "compare",
    "data",
    "detect",
    "detection_table",
    "devices",
    "distributed",
    "errors",
    "estimator",
    "estimators",
    "fit",
    "handlers",
    "infer",
    "latent_stats",
    "load",
    "load_model",
    "load_run",
    "log_likelihood",
    "models",
    "options",
    "plots",
    "precision",
    "results",
    "runs",
    "save_model",
    "seeds",
    "storage",
    "tracking",
    "train",
]
