"""pyrovae: variational autoencoders the Pyro way.

The generative model p(z) p(x|z) is a Pyro model, q(z|x) an amortized guide, and SVI trains
both; models are evaluated by importance-sampled estimates of log p(x) and a ladder of bounds.
Any model/guide pair whose per-datapoint sites live in ``pyro.plate("data", N)`` works with
every trainer, estimator and evaluator here.
"""

from . import (
    anomaly,
    data,
    datasets,
    devices,
    diagnostics,
    distributed,
    estimators,
    handlers,
    infer,
    io,
    latent_space,
    likelihoods,
    nn,
    options,
    plots,
    priors,
    results,
    rundir,
    traces,
)
from .ais import AIS, ais
from .anomaly import AnomalyScores, anomaly_scores
from .bdmc import BDMC, bdmc
from .bounds import Bounds, bounds
from .categorical import CategoricalVAE
from .compare import Comparison, compare
from .cvae import CVAE
from .data import DataSource
from .datasets import VAEDataset, as_dataset, load
from .detection import Detection, detect, detection_table
from .errors import ConfigError, DataError, PyroVAEError, TrainingError
from .estimators import (
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
from .hvae import HVAE
from .importance import LogLikelihood, log_likelihood
from .latents import LatentStats, latent_stats
from .run import Run, RunConfig, load_run
from .sbn import SBN
from .ssvae import SSVAE
from .training import FitResult, Trainer, fit
from .vae import VAE

__version__ = "0.1.0"

__all__ = [
    "AnomalyScores",
    "Detection",
    "anomaly",
    "anomaly_scores",
    "detect",
    "detection_table",
    "AIS",
    "BDMC",
    "CIWAE",
    "IWAE",
    "MIWAE",
    "PIWAE",
    "STL",
    "SSVAE",
    "VAE",
    "CVAE",
    "Bounds",
    "Comparison",
    "ConfigError",
    "Run",
    "RunConfig",
    "DataSource",
    "DReG",
    "DataError",
    "HVAE",
    "SBN",
    "CategoricalVAE",
    "FitResult",
    "KLAnnealed",
    "LatentStats",
    "LogLikelihood",
    "PyroVAEError",
    "Renyi",
    "RWS",
    "TailAdaptiveELBO",
    "TraceELBO",
    "TraceGraphELBO",
    "VIMCO",
    "Trainer",
    "TrainingError",
    "VAEDataset",
    "ais",
    "as_dataset",
    "bdmc",
    "bounds",
    "compare",
    "data",
    "datasets",
    "devices",
    "diagnostics",
    "distributed",
    "estimator",
    "estimators",
    "fit",
    "handlers",
    "infer",
    "likelihoods",
    "latent_space",
    "latent_stats",
    "load",
    "load_run",
    "log_likelihood",
    "nn",
    "io",
    "options",
    "plots",
    "priors",
    "results",
    "rundir",
    "traces",
]
