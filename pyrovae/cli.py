"""The ``pyrovae`` command line: ``train``, ``sample``, ``reconstruct``, ``evaluate`` and ``compare``.

Usage errors (unknown names, bad options, missing data, a run directory or an output file that
would be overwritten) print one message naming the problem and its fix and exit with status 2; a
run that fails (a NaN loss) exits with status 1. No traceback is shown for either.

``sample``, ``reconstruct``, ``evaluate`` and ``compare`` never replace an existing file unless
given ``--overwrite``, whether it is their default file in the run directory or an ``--out``; every
output path is checked before anything is computed. ``python -m pyrovae`` runs the same command line.

Every command runs under ``torchrun --nproc_per_node N`` too (see :mod:`pyrovae.distributed`):
``train`` trains data-parallel and ``evaluate`` shards the data points; rank 0 alone prints and
writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
import warnings
from pathlib import Path

from pyrovae import __version__
from pyrovae.errors import ConfigError, PyroVAEError
from pyrovae.options import check_option

_SPLITS = ("train", "valid", "test")
#: at most this many test images in the embedding figure ``pyrovae train`` writes
EMBEDDED = 2000


class HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option's line with ``(default: X)`` where that says something: not when
    the default is ``None``, ``False`` or suppressed, nor when the help text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or "default" in help:
            return help
        return f"{help} (default: %(default)s)"


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"hidden sizes must be integers separated by commas, not {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive integers, not {text!r}")
    return sizes


def _optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    return parse


def _add_train(sub) -> argparse.ArgumentParser:
    from pyrovae.data.datasets import NAMES
    from pyrovae.estimators import ESTIMATORS
    from pyrovae.models.likelihoods import LIKELIHOODS
    from pyrovae.models.nn import ACTIVATIONS, NETWORKS
    from pyrovae.models.priors import DEFAULT_COMPONENTS, PRIORS
    from pyrovae.runs.run import MODELS, RunConfig
    from pyrovae.train.loop import OPTIMIZERS

    defaults = RunConfig()

    def option(group, flag: str, help: str, **kwargs) -> None:
        """A configuration option: absent from the parsed arguments unless given (so that a value
        that parses to None, such as --binarize none, is kept), its help ending in its default."""
        name = flag[2:].replace("-", "_")
        default = kwargs.pop("shown", getattr(defaults, name))
        if isinstance(default, list):
            default = ",".join(map(str, default))
        group.add_argument(flag, default=argparse.SUPPRESS, help=f"{help} (default: {default})", **kwargs)

    p = sub.add_parser(
        "train",
        help="train a VAE and write a run directory",
        description="Train a VAE by SVI. Writes config.json, a checkpoint every epoch, history.csv, "
        "figures (samples, reconstructions, learning curves, and the test set's latent space coloured "
        "by class where it has labels) and results.json with the test bound. "
        "With --resume, the options that define the model, its data and its objective are the run's "
        "(giving another value is an error); --epochs, --patience, --lr, --clip-norm, --device, "
        "--data-root and --download may change.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--config", metavar="FILE", help="read options from a JSON file (flags override it)")
    p.add_argument("--run-dir", help="output directory (default: runs/DATASET-TIMESTAMP)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its last epoch (or finish its final evaluation)",
    )
    p.add_argument("--overwrite", action="store_true", help="start a new run in a non-empty --run-dir")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    _add_backend(p)
    option(
        p,
        "--device",
        "where to compute: auto (a GPU where there is one, else the CPU), cpu, cuda, cuda:N or mps",
    )
    p.add_argument(
        "--test-samples",
        type=int,
        default=1000,
        metavar="K",
        help="importance samples per test image for the final log p(x) estimate, 0 to skip",
    )
    g = p.add_argument_group("data")
    option(g, "--dataset", "data set", choices=NAMES)
    option(g, "--data-root", "directory with the data files", shown="the data set's own")
    option(g, "--download", "download missing data files", action="store_true")
    option(
        g,
        "--binarize",
        "dynamic, threshold, none, or default (the data set's own under a bernoulli likelihood, "
        "none under others)",
        type=_optional(str),
    )
    g = p.add_argument_group("model")
    option(
        g,
        "--likelihood",
        f"observation model p(x|z): {', '.join(LIKELIHOODS)} (binomial:levels=L names the grey levels; "
        "a data set's own are known), or default: binomial on digits, bernoulli otherwise",
    )
    option(g, "--likelihood-scale", "Gaussian likelihood's (initial) scale", type=float)
    option(g, "--model", "vae, or hvae: two stochastic layers z2 -> z1 -> x", choices=MODELS)
    option(g, "--prior", "prior of the (top) latent", choices=PRIORS)
    option(
        g,
        "--prior-components",
        "components of the mixture prior or pseudo-inputs of the vamp prior",
        type=_optional(int),
        metavar="K",
        shown=", ".join(f"{k} for {n}" for n, k in DEFAULT_COMPONENTS.items()),
    )
    option(g, "--network", "encoder and decoder family", choices=NETWORKS)
    option(g, "--latent-dim", "dimension of z (of the bottom layer z1 of an hvae)", type=int)
    option(
        g,
        "--latent-dim2",
        "dimension of the top layer z2 of an hvae",
        type=_optional(int),
        shown="--latent-dim",
    )
    option(g, "--hidden", "hidden layer sizes, comma separated, e.g. 400 or 300,300", type=_hidden)
    option(g, "--activation", "nonlinearity between layers", choices=sorted(ACTIVATIONS))
    g = p.add_argument_group("training")
    option(g, "--estimator", "the bound SVI maximizes", choices=sorted(ESTIMATORS))
    option(
        g,
        "--k",
        "particles per data point of the multi-sample estimators (per group for miwae and piwae)",
        type=_optional(int),
        shown="the estimator's",
    )
    option(g, "--alpha", "order of the renyi bound", type=_optional(float), shown="the estimator's")
    option(g, "--m", "groups of k particles of miwae and piwae", type=_optional(int), shown="the estimator's")
    option(
        g,
        "--mix",
        "weight of the ELBO in ciwae's mix with IWAE-k",
        type=_optional(float),
        shown="the estimator's",
    )
    option(
        g,
        "--beta",
        "weight of the KL (latent) part of any estimator (beta-VAE)",
        type=_optional(float),
        shown=1,
    )
    option(g, "--epochs", "epochs to train (in all, counting those of a resumed run)", type=int)
    option(g, "--batch-size", "data points per step", type=int)
    option(g, "--lr", "learning rate", type=float)
    option(g, "--optimizer", "optimizer (adam-normgrad: the VampPrior paper's)", choices=tuple(OPTIMIZERS))
    option(g, "--kl-warmup", "epochs of linear KL warm-up, 0 for none", type=int)
    option(
        g, "--clip-norm", "clip gradients to this global norm, none for no clipping", type=_optional(float)
    )
    option(
        g, "--patience", "early stopping patience in epochs, none for no early stopping", type=_optional(int)
    )
    option(g, "--seed", "seed of the initial parameters, the shuffling and the draws", type=int)
    return p


def _add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument(
        "--device",
        default=default,
        help="where to compute: auto (a GPU where there is one, else the CPU), cpu, cuda, cuda:N or mps"
        + ("" if default else " (default: auto, or the run's config.json)"),
    )


def _add_backend(p: argparse.ArgumentParser) -> None:
    from pyrovae.distributed import BACKENDS

    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="torch.distributed backend under torchrun (default: gloo, with nccl for CUDA tensors on GPUs)",
    )


def _add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory of a `pyrovae train` run")


def _add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="parameters to use: the best on the validation data, or the last epoch's",
    )


def _add_run_command(sub, name: str, help: str, out: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    _add_run_dir(p)
    _add_checkpoint(p)
    p.add_argument("--out", metavar="FILE.png", help=f"where to write the figure (default: RUN_DIR/{out})")
    p.add_argument("--overwrite", action="store_true", help="replace the figure if it exists")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    _add_device(p)
    return p


def _ks(text: str) -> list[int]:
    try:
        ks = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, not {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return ks


def _default_bounds(num_samples: int) -> list[int]:
    """The powers of ten below ``num_samples``, and ``num_samples``: 1, 10, 100, 300 for 300."""
    ks, k = [], 1
    while k < num_samples:
        ks.append(k)
        k *= 10
    return [*ks, num_samples]


def _add_evaluate(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="estimate log p(x) per data point and the ladder of bounds",
        description="Importance-sampled log p(x) of every data point of a split, with standard errors, "
        "effective sample sizes and PSIS k-hat, and the ladder ELBO <= IWAE-k, optionally with annealed "
        "importance sampling rows (--ais-steps) and the BDMC sandwich on simulated data (--bdmc). Writes "
        "evaluation-SPLIT.json (summary), .csv and .nc (per data point; BDMC's simulated points in "
        "evaluation-SPLIT-bdmc.csv and the .nc) and bounds-SPLIT.png into RUN_DIR; existing ones are "
        "replaced only with --overwrite.",
        formatter_class=HelpFormatter,
    )
    _add_run_dir(p)
    _add_data_source(p)
    p.add_argument("--split", choices=_SPLITS, default="test", help="the split to evaluate")
    p.add_argument("--num-samples", type=int, default=5000, help="importance samples K per data point")
    p.add_argument(
        "--bounds",
        type=_ks,
        metavar="K1,K2,...",
        help="k of the IWAE-k rows of the ladder, k = 1 being the ELBO (default: the powers of ten below "
        "--num-samples and --num-samples itself, e.g. 1,10,100,1000,5000)",
    )
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="evaluate N data points of the split drawn at random with --seed (default: the whole split)",
    )
    p.add_argument(
        "--ais-steps",
        type=_ks,
        default=[],
        metavar="T1,T2,...",
        help="add an AIS-T row (annealed importance sampling with T steps) for each T (default: none)",
    )
    p.add_argument("--ais-chains", type=int, default=16, help="AIS chains per data point")
    p.add_argument("--leapfrog-steps", type=int, default=10, help="leapfrog steps per HMC transition of AIS")
    p.add_argument(
        "--bdmc",
        type=int,
        default=0,
        metavar="N",
        help="BDMC sandwich on N data points simulated from the model, 0 for none",
    )
    p.add_argument(
        "--bdmc-steps", type=int, help="annealing steps of BDMC (default: the largest --ais-steps, or 1000)"
    )
    p.add_argument(
        "--max-memory",
        type=float,
        default=512,
        metavar="MiB",
        help="memory for one chunk of data points and particles",
    )
    _add_checkpoint(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples and of --limit")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace the output files that exist")
    _add_backend(p)
    _add_device(p)
    return p


def _add_compare(sub) -> argparse.ArgumentParser:
    from pyrovae.analysis.comparison import DEFAULT_ESTIMATORS

    p = sub.add_parser(
        "compare",
        help="compare estimators' bounds and gradient signal-to-noise ratios on a trained model",
        description="Draw the gradient of each estimator's loss --num-repeats times on one random batch of "
        "a split, at the run's parameters, and report the bound (mean and standard error), the median "
        "signal-to-noise ratio |mean|/sd of the guide's and the model's gradient elements, their mean "
        "variance and the time per step. Writes compare.csv and compare.png into RUN_DIR; existing ones "
        "are replaced only with --overwrite.",
        formatter_class=HelpFormatter,
    )
    _add_run_dir(p)
    p.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        metavar="SPEC,SPEC,...",
        help="estimators NAME[:OPTION=VALUE]..., e.g. iwae:k=5 or renyi:alpha=0.5:k=5, separated by commas",
    )
    p.add_argument("--num-repeats", type=int, default=100, help="gradient draws per estimator")
    p.add_argument("--split", choices=_SPLITS, default="test", help="the split the batch is drawn from")
    p.add_argument("--batch-size", type=int, default=100, help="data points in the batch")
    _add_checkpoint(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the batch and of the draws")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace the output files that exist")
    _add_device(p)
    return p


def _add_latents(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "latents",
        help="how the run's model uses its latents: active units, KL per dimension, I(x; z), pictures",
        description="Active units (Cov_x E_q[z] > 0.01), the KL of every latent dimension, and the ELBO "
        "decomposed into reconstruction, the index-code mutual information I(x; z) and the marginal KL "
        "(Hoffman & Johnson 2016), on a split; then the pictures: the latent means in 2-D (coloured by "
        "label where the data set has labels), an interpolation between two inputs, a traversal of the "
        "most active dimensions, and samples from the prior. Writes latents-SPLIT.csv (one row per "
        "latent dimension), .json (summary), .png (KL and activity per dimension), "
        "latents-SPLIT-embedding.png, -interpolation.png, -traversal.png and -prior-samples.png into "
        "RUN_DIR; existing ones are replaced only with --overwrite.",
        formatter_class=HelpFormatter,
    )
    _add_run_dir(p)
    p.add_argument("--split", choices=_SPLITS, default="test", help="the split analysed")
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="analyse N data points drawn at random with --seed (default: the whole split; the mutual "
        "information costs N^2 density evaluations)",
    )
    p.add_argument("--num-particles", type=int, default=10, help="draws from the guide per data point")
    p.add_argument(
        "--embedding",
        choices=("pca", "tsne"),
        default="pca",
        help="how the latent means are shown in 2-D",
    )
    _add_checkpoint(p)
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the draws, of --limit and of the pictures' inputs"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace the output files that exist")
    _add_device(p)
    return p


def _add_data_source(p: argparse.ArgumentParser, flag: str = "--dataset", root: str = "--data-root") -> None:
    from pyrovae.data.datasets import NAMES

    p.add_argument(flag, choices=NAMES, help="a data set other than the run's (default: the run's)")
    p.add_argument(root, metavar="DIR", help=f"directory with the files of {flag} (default: its own)")


def _add_scoring(p: argparse.ArgumentParser) -> None:
    """The options of anomaly scoring that ``score`` and ``detect`` share."""
    p.add_argument("--split", choices=_SPLITS, default="test", help="the split scored")
    p.add_argument("--num-samples", type=int, default=1000, help="importance samples K per data point")
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        help="score N data points drawn at random (default: the whole split)",
    )
    p.add_argument(
        "--background",
        metavar="RUN_DIR",
        help="run of the background model, for likelihood-ratio (the same architecture trained on "
        "perturbed inputs)",
    )
    p.add_argument(
        "--group-size", type=int, default=10, help="inputs per group of the typicality test (default: 10)"
    )
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per input of likelihood-regret")
    _add_checkpoint(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the draws and of --limit")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace the output files that exist")
    _add_device(p)


def _add_score(sub) -> argparse.ArgumentParser:
    from pyrovae.analysis.anomaly import METHODS

    p = sub.add_parser(
        "score",
        help="score every input of a data set for how anomalous the run's model finds it",
        description="Anomaly scores (higher = more anomalous) of every data point of a split, by one "
        "method of pyrovae.anomaly_scores. Writes scores-DATASET-SPLIT-METHOD.csv and .nc (per data "
        "point) and .json (summary) into RUN_DIR.",
        formatter_class=HelpFormatter,
    )
    _add_run_dir(p)
    _add_data_source(p)
    p.add_argument("--method", choices=METHODS, default="nll", help="the anomaly score")
    _add_scoring(p)
    return p


def _add_detect(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "detect",
        help="how well anomaly scores tell a data set from the run's own (AUROC, AUPRC, FPR95)",
        description="Scores the split of an in-distribution data set (default: the run's) and of an "
        "out-of-distribution one by each method, and reports AUROC, AUPRC and FPR at 95 %% TPR. Writes "
        "detect-IN-vs-OUT.csv (the table) and detect-IN-vs-OUT-METHOD.png (histograms and ROC curve) "
        "into RUN_DIR.",
        formatter_class=HelpFormatter,
    )
    _add_run_dir(p)
    _add_data_source(p, "--in", "--in-root")
    from pyrovae.data.datasets import NAMES

    p.add_argument("--out", choices=NAMES, required=True, help="the out-of-distribution data set")
    p.add_argument("--out-root", metavar="DIR", help="directory with the files of --out (default: its own)")
    p.add_argument(
        "--methods",
        default="nll,complexity,likelihood-regret",
        metavar="METHOD,METHOD,...",
        help="anomaly scores to compare, separated by commas",
    )
    _add_scoring(p)
    return p


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pyrovae",
        description="Variational autoencoders the Pyro way: train, sample, evaluate.",
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version and exit"
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train(sub)
    s = _add_run_command(sub, "sample", "draw images from a trained model's prior and decoder", "samples.png")
    s.add_argument("--num", type=int, default=100, help="number of samples")
    r = _add_run_command(
        sub, "reconstruct", "show data next to their reconstructions", "reconstructions-SPLIT.png"
    )
    r.add_argument("--split", choices=_SPLITS, default="test", help="the split the images are drawn from")
    r.add_argument("--num", type=int, default=20, help="number of images, drawn at random with --seed")
    _add_evaluate(sub)
    _add_compare(sub)
    _add_score(sub)
    _add_detect(sub)
    _add_latents(sub)
    return p


def _train_config(args: argparse.Namespace, run_dir: Path | None):
    """The run's configuration: with --resume, the checkpoint's (or, before the first epoch was
    saved, config.json's) with the options a resumed run may change; else --config's or the
    defaults; then the flags given. A flag that would change a resumed run's model, data or
    objective is an error naming it."""
    from pyrovae.runs.directory import CHECKPOINT, CONFIG, read_state
    from pyrovae.runs.run import MUTABLE, RunConfig

    if args.config and args.resume:
        raise ConfigError(
            "--resume takes the run's configuration from its checkpoint; drop --config and give the "
            "options to change (--epochs, --lr, ...) as flags"
        )
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig) if hasattr(args, f.name)}
    base, source = RunConfig(), "the defaults"
    if args.config:
        base, source = RunConfig.read(args.config), args.config
    if args.resume and run_dir is not None and (run_dir / CHECKPOINT).is_file():
        stored = read_state(run_dir / CHECKPOINT).get("config") or {}
        stored = {k: v for k, v in stored.items() if k != "event_shape"}
        if not stored or stored.get("dataset", "") is None:
            raise ConfigError(
                f"the run in {run_dir} was trained from Python (pyrovae.fit) "
                + ("on data of its own" if stored else "without a configuration pyrovae can rebuild it from")
                + "; resume it from Python: pyrovae.fit(vae, data, run_dir=..., resume=True, epochs=...)"
            )
        base, source = (
            RunConfig.from_dict(stored, f"the configuration in {run_dir / CHECKPOINT}"),
            "checkpoint",
        )
    elif args.resume and run_dir is not None and (run_dir / CONFIG).is_file():
        base, source = RunConfig.read(run_dir / CONFIG), "config"
    config = RunConfig.from_dict({**base.to_dict(), **given})
    if source in ("checkpoint", "config"):
        changed = {k: v for k, v in base.differences(config).items() if k not in MUTABLE}
        if changed:
            listed = ", ".join(
                f"--{k.replace('_', '-')} {new!r} (the run's: {old!r})" for k, (old, new) in changed.items()
            )
            raise ConfigError(
                f"--resume keeps the run's model, data and objective, but {listed} would change them; drop "
                f"{'that option' if len(changed) == 1 else 'those options'}, or start a new run with "
                "--overwrite or another --run-dir"
            )
    return config


def train(args: argparse.Namespace) -> int:
    import pyro
    import torch

    from pyrovae import devices, distributed, plots
    from pyrovae.data.source import DataSource
    from pyrovae.runs.directory import RESULTS, RunDirectory, checkpoint_bytes
    from pyrovae.storage import write_json
    from pyrovae.train.loop import check_data, fit

    run_dir = Path(args.run_dir) if args.run_dir else None
    if args.resume and run_dir is None:
        raise ConfigError("--resume continues the run in --run-dir: pass --run-dir")
    config = _train_config(args, run_dir)
    check_option("test_samples", args.test_samples)
    device = devices.resolve(config.device)  # an unavailable device is refused before anything is written
    config.build_estimator()  # an unknown estimator is refused before anything is written
    if run_dir is None:
        run_dir = Path(
            distributed.broadcast_object(f"runs/{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
        )
    train_data = config.load_data("train")
    valid_data = config.load_data("valid")
    test = config.load_data("test")
    pyro.set_rng_seed(config.seed)  # the initial parameters too are determined by the seed
    vae = config.build_vae(train_data.event_shape)
    for data, what in ((train_data, "the training data"), (valid_data, "the validation data")):
        check_data(vae, DataSource(data, what), what)
    # every check is done: only now is the directory written (created, locked, cleaned)
    directory = RunDirectory(
        run_dir, resume=args.resume, overwrite=args.overwrite, need_bytes=checkpoint_bytes(vae)
    )
    with directory:
        result = fit(
            vae,
            train_data,
            valid_data,
            **config.fit_options(),
            run_dir=directory,
            progress=not args.no_progress,
            config=config.to_dict(),
            device=device,
        )
        print(result.summary())
        torch.manual_seed(config.seed)
        results = {"epochs": int(result.history["epoch"].iloc[-1]), "test_size": len(test)}
        results["test_negative_elbo"] = _test_bound(result, test)
        print(f"test negative ELBO: {results['test_negative_elbo']:.3f} nats per image ({len(test)} images)")
        if args.test_samples > 0:
            from pyrovae.infer.importance import log_likelihood

            ll = log_likelihood(
                result.vae.model,
                result.vae.guide,
                test,
                args.test_samples,
                seed=config.seed,
                progress=not args.no_progress,
                device=device,
            )
            results[f"test_nll_is{args.test_samples}"] = ll.nll
            results[f"test_nll_is{args.test_samples}_stderr"] = ll.stderr
            print(
                f"test log p(x), importance sampled with K = {args.test_samples}: "
                f"{ll.mean:.3f} ± {ll.stderr:.3f} nats per image (NLL {ll.nll:.3f})"
            )
        if distributed.is_main():
            write_json(run_dir / RESULTS, results)
            if test.targets is not None:  # the latent space, coloured by class
                embedding = run_dir / "embedding.png"
                with distributed.alone():
                    plots.embedding(
                        result.vae, test, test.targets, embedding, seed=config.seed, limit=EMBEDDED
                    )
    print(f"run directory: {run_dir}")
    return 0


def _test_bound(result, test) -> float:
    """The negative ELBO of the test set, whatever the estimator trained the model (sharded
    across the ranks of a distributed run)."""
    from pyrovae.devices import of_model
    from pyrovae.train.loop import Trainer

    trainer = Trainer(result.vae, len(test), device=of_model(result.vae))
    return trainer.evaluate(test)


def _check_outputs(args: argparse.Namespace, *paths: Path) -> None:
    """Refuse, before anything is computed, to replace an existing output file without --overwrite.

    Each file's directory must be writable (checked by :func:`pyrovae.storage.check_writable`). Rank 0
    alone writes, so under torchrun every rank follows rank 0's view of the files.
    """
    from pyrovae import distributed
    from pyrovae.storage import check_writable

    for directory in {path.parent for path in paths}:
        check_writable(directory)
    if args.overwrite:
        return
    existing = distributed.broadcast_object([str(path) for path in paths if path.exists()])
    if existing:
        it, exists = ("it", "exists") if len(existing) == 1 else ("them", "exist")
        other = "choose another --out" if args.command in ("sample", "reconstruct") else f"remove {it}"
        raise ConfigError(f"{', '.join(existing)} {exists}; pass --overwrite to replace {it}, or {other}")


def _out_path(args: argparse.Namespace, default: str) -> Path:
    """The figure's path, --out or ``default`` in the run directory, checked by :func:`_check_outputs`."""
    out = Path(args.out) if args.out else Path(args.run_dir) / default
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name, such as {out / default}")
    _check_outputs(args, out)
    return out


def sample(args: argparse.Namespace) -> int:
    import torch

    from pyrovae import plots
    from pyrovae.runs.run import load_run

    if args.num < 1:
        raise ConfigError("--num must be at least 1")
    check_option("seed", args.seed)
    out = _out_path(args, "samples.png")
    run = load_run(args.run_dir, args.checkpoint, args.device)
    torch.manual_seed(args.seed)
    plots.image_grid(run.vae.sample(args.num), out, title=f"samples (epoch {run.epoch})")
    print(f"wrote {out}")
    return 0


def reconstruct(args: argparse.Namespace) -> int:
    import torch

    from pyrovae import plots
    from pyrovae.data.source import DataSource
    from pyrovae.devices import of_model
    from pyrovae.runs.run import load_run

    if args.num < 1:
        raise ConfigError("--num must be at least 1")
    check_option("seed", args.seed)
    out = _out_path(args, f"reconstructions-{args.split}.png")
    run = load_run(args.run_dir, args.checkpoint, args.device)
    data = DataSource(run.load_data(args.split))
    torch.manual_seed(args.seed)
    x = data.sample(args.num, seed=args.seed)[0].to(of_model(run.vae))
    plots.reconstructions(x, run.vae.reconstruct(x), out)
    print(f"wrote {out} ({len(x)} {args.split} images drawn at random with seed {args.seed})")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    import xarray as xr

    from pyrovae import distributed
    from pyrovae.data.source import DataSource
    from pyrovae.infer.ladder import bounds
    from pyrovae.runs.run import load_run
    from pyrovae.storage import atomic_path, write_json, write_text

    if args.num_samples < 1:
        raise ConfigError("--num-samples must be at least 1")
    ks = args.bounds or _default_bounds(args.num_samples)
    if max(ks) > args.num_samples:
        raise ConfigError(
            f"--bounds asks for k = {max(ks)} but --num-samples is {args.num_samples}; "
            "raise --num-samples or drop the larger k"
        )
    for flag, value in (("--ais-chains", args.ais_chains), ("--leapfrog-steps", args.leapfrog_steps)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1")
    if args.bdmc < 0 or (args.bdmc_steps is not None and args.bdmc_steps < 1):
        raise ConfigError("--bdmc must be at least 0 and --bdmc-steps at least 1")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if not args.max_memory > 0:
        raise ConfigError(f"--max-memory must be a positive number of MiB; got {args.max_memory:g}")
    check_option("seed", args.seed)
    name = f"{args.dataset}-{args.split}" if args.dataset else args.split  # another data set: its own files
    stem = Path(args.run_dir) / f"evaluation-{name}"
    bdmc_csv, figure = Path(f"{stem}-bdmc.csv"), Path(args.run_dir) / f"bounds-{name}.png"
    outputs = [stem.with_suffix(suffix) for suffix in (".json", ".csv", ".nc")]
    _check_outputs(args, *outputs, *([bdmc_csv] if args.bdmc > 0 else []), figure)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    if args.overwrite and args.bdmc == 0:
        bdmc_csv.unlink(missing_ok=True)  # an earlier evaluation's, which this one replaces
    data = _scoring_data(run, args.dataset, args.data_root, args)
    subset = ""
    if args.limit is not None:  # a random subset: a data set may be ordered by class (binarized MNIST's is)
        subset = f" ({len(DataSource(data))} drawn at random with seed {args.seed})"
    ladder = bounds(
        run.vae.model,
        run.vae.guide,
        data,
        ks=sorted({*ks, args.num_samples}),
        seed=args.seed,
        progress=not args.no_progress,
        max_memory=int(args.max_memory * 2**20),
        ais_steps=args.ais_steps,
        ais_chains=args.ais_chains,
        bdmc_data=args.bdmc,
        bdmc_steps=args.bdmc_steps,
        ais_options={"leapfrog_steps": args.leapfrog_steps},
    )
    if not distributed.is_main():  # every rank holds the gathered results; rank 0 writes them
        return 0
    ll = ladder.log_likelihood
    summary = {
        "dataset": args.dataset or run.config.dataset,
        "split": args.split,
        "checkpoint": args.checkpoint,
        "epoch": run.epoch,
        "seed": args.seed,
        "limit": args.limit,
        "device": str(run.vae_device),
        "log_likelihood": ll.to_json_dict(),
        "bounds": ladder.to_json_dict(),
    }
    write_json(stem.with_suffix(".json"), summary)
    table = ll.to_dataframe().join(ladder.to_dataframe())
    write_text(stem.with_suffix(".csv"), table.to_csv())
    written = f"{stem}.json, .csv, .nc"
    if ladder.bdmc is not None:
        write_text(bdmc_csv, ladder.bdmc.to_dataframe().to_csv())
        written += f", {bdmc_csv.name}"
    with atomic_path(stem.with_suffix(".nc")) as tmp:
        xr.merge([ll.to_xarray(), ladder.to_xarray()], combine_attrs="drop").to_netcdf(tmp, engine="h5netcdf")
    ladder.plot(figure)
    print(f"{args.dataset or run.config.dataset} {args.split} split{subset}, device {run.vae_device}")
    print(ll.summary())
    print(ladder.summary())
    print(f"wrote {written} and {figure.name}")
    return 0


def compare(args: argparse.Namespace) -> int:
    from pyrovae.analysis.comparison import compare as compare_estimators
    from pyrovae.data.source import DataSource
    from pyrovae.estimators import estimator
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_text

    if args.batch_size < 1 or args.num_repeats < 2:
        raise ConfigError("--batch-size must be at least 1 and --num-repeats at least 2")
    check_option("seed", args.seed)
    specs = [spec.strip() for spec in args.estimators.split(",") if spec.strip()]
    if not specs or len(set(specs)) != len(specs):
        raise ConfigError(
            f"--estimators must name at least one estimator, each once; got {args.estimators!r}"
        )
    estimators = {spec: estimator(spec) for spec in specs}
    table, figure = Path(args.run_dir) / "compare.csv", Path(args.run_dir) / "compare.png"
    _check_outputs(args, table, figure)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    x = DataSource(run.load_data(args.split)).sample(args.batch_size, seed=args.seed)
    result = compare_estimators(
        run.vae.model,
        run.vae.guide,
        x,
        estimators,
        num_repeats=args.num_repeats,
        seed=args.seed,
        progress=not args.no_progress,
    )
    write_text(table, result.to_dataframe().to_csv())
    result.plot(figure)
    print(f"{args.split} split, epoch {run.epoch} ({args.checkpoint} checkpoint), seed {args.seed}")
    print(result.summary())
    print(f"wrote {table} and {figure.name}")
    return 0


def latents(args: argparse.Namespace) -> int:
    import torch

    from pyrovae import plots
    from pyrovae.analysis.latent_usage import latent_stats
    from pyrovae.data.source import DataSource
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_json, write_text

    if args.limit is not None and args.limit < 2:
        raise ConfigError("--limit must be at least 2 (the activity is a variance over data points)")
    if args.num_particles < 1:
        raise ConfigError("--num-particles must be at least 1")
    check_option("seed", args.seed)
    stem = Path(args.run_dir) / f"latents-{args.split}"
    kinds = ("embedding", "interpolation", "traversal", "prior-samples")
    pictures = {kind: Path(f"{stem}-{kind}.png") for kind in kinds}
    tables = [stem.with_suffix(suffix) for suffix in (".csv", ".json", ".png")]
    _check_outputs(args, *tables, *pictures.values())
    run = load_run(args.run_dir, args.checkpoint, args.device)
    data = run.load_data(args.split)
    source = DataSource(data)
    index = torch.randperm(len(source), generator=torch.Generator().manual_seed(args.seed))
    if args.limit is not None:
        index = index[: args.limit]
    if len(index) < 2:
        raise ConfigError(f"the {args.split} split has {len(index)} data point; latents needs at least 2")
    x = source.batch(index)
    labels = getattr(data, "targets", None)
    labels = None if labels is None else labels[index]
    stats = latent_stats(
        run.vae.model, run.vae.guide, x, args.num_particles, seed=args.seed, progress=not args.no_progress
    )
    subset = f"{len(index)} drawn at random with seed {args.seed}" if args.limit is not None else "all"
    write_text(stem.with_suffix(".csv"), stats.to_dataframe().to_csv(index=False))
    write_json(
        stem.with_suffix(".json"),
        {
            "dataset": run.config.dataset,
            "split": args.split,
            "limit": args.limit,
            "checkpoint": args.checkpoint,
            "epoch": run.epoch,
            "seed": args.seed,
            "device": str(run.vae_device),
            **stats.to_json_dict(),
        },
    )
    stats.plot(stem.with_suffix(".png"))
    pair = run.vae
    first = stats.sites.index[0]
    top = stats.dims[stats.dims["site"] == first].sort_values("activity", ascending=False)
    plots.embedding(pair, x, labels, pictures["embedding"], method=args.embedding, site=first, seed=args.seed)
    a, b = (tuple(t[i : i + 1] for t in x) for i in (0, 1))
    # spherical as well where the prior is the standard normal, whose codes concentrate on a sphere
    method = "both" if run.config.prior == "normal" else "linear"
    plots.interpolate(pair, a, b, 10, pictures["interpolation"], method=method)
    plots.traverse(pair, a, sorted(top["dim"].head(10).tolist()), path=pictures["traversal"], site=first)
    plots.prior_samples(pair, x, 16, pictures["prior-samples"], seed=args.seed)
    print(f"{run.config.dataset} {args.split} split ({subset}), epoch {run.epoch}, device {run.vae_device}")
    print(stats.summary())
    print(f"wrote {stem}.csv, .json, .png and latents-{args.split}-{{{','.join(kinds)}}}.png")
    return 0


@contextlib.contextmanager
def _rank_zero_stdout(backend: str | None):
    """Start the process group under torchrun; only rank 0 prints to stdout (errors go to stderr)."""
    from pyrovae import distributed

    distributed.init(backend)
    if distributed.is_main():
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        yield


def _check_scoring(args: argparse.Namespace, methods: list[str]) -> None:
    """The scoring options, before anything is loaded."""
    from pyrovae.analysis.anomaly import METHODS
    from pyrovae.errors import unknown_name

    for method in methods:
        if method not in METHODS:
            raise unknown_name("anomaly score method", method, METHODS)
    for flag, value, low in (("--num-samples", args.num_samples, 1), ("--group-size", args.group_size, 1)):
        if value < low:
            raise ConfigError(f"{flag} must be at least {low}")
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    if args.steps < 1:
        raise ConfigError("--steps must be at least 1")
    check_option("seed", args.seed)
    if "likelihood-ratio" in methods and not args.background:
        raise ConfigError(
            "likelihood-ratio needs --background RUN_DIR: a run of the same architecture trained on "
            "perturbed inputs (see pyrovae.analysis.anomaly.perturb)"
        )


def _scoring_data(run, dataset: str | None, root: str | None, args):
    """The split of ``dataset`` (default: the run's), binarized as the run's data, limited."""
    from pyrovae.data.datasets import load
    from pyrovae.data.source import DataSource

    if dataset is None:
        data = run.load_data(args.split)
    else:
        data = load(dataset, args.split, root=root, binarize=run.config.binarize_mode())
    if args.limit is not None and args.limit < len(data):
        return DataSource(data).sample(args.limit, seed=args.seed)
    return data


def _score(args, run, background, data, method: str):
    from pyrovae.analysis.anomaly import anomaly_scores
    from pyrovae.data.source import DataSource

    reference = None
    if method == "typicality":
        # held-out in-distribution data: a sample of the run's validation split; groups of inputs
        # drawn at random (a split may be ordered by class)
        valid = run.load_data("valid")
        reference = DataSource(valid).sample(min(len(valid), args.limit or 2000), seed=args.seed + 1)
        data = DataSource(data).sample(len(DataSource(data)), seed=args.seed)
    return anomaly_scores(
        run.vae.model,
        run.vae.guide,
        data,
        method,
        num_samples=args.num_samples,
        seed=args.seed,
        background=None if background is None else (background.vae.model, background.vae.guide),
        reference=reference,
        group_size=args.group_size,
        steps=args.steps,
        progress=not args.no_progress,
    )


def score(args: argparse.Namespace) -> int:
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_json, write_text

    _check_scoring(args, [args.method])
    name = args.dataset or "run"
    stem = Path(args.run_dir) / f"scores-{name}-{args.split}-{args.method}"
    outputs = [stem.with_suffix(suffix) for suffix in (".csv", ".nc", ".json")]
    _check_outputs(args, *outputs)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    background = load_run(args.background, args.checkpoint, args.device) if args.background else None
    data = _scoring_data(run, args.dataset, args.data_root, args)
    result = _score(args, run, background, data, args.method)
    write_text(outputs[0], result.to_dataframe().to_csv())
    result.to_netcdf(outputs[1])
    write_json(
        outputs[2],
        {"dataset": args.dataset or run.config.dataset, "split": args.split, **result.to_json_dict()},
    )
    print(result.summary())
    print(f"wrote {stem}.csv, .nc and .json")
    return 0


def detect(args: argparse.Namespace) -> int:
    from pyrovae.analysis.detection import detect as detect_sets
    from pyrovae.analysis.detection import detection_table
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_text

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or len(set(methods)) != len(methods):
        raise ConfigError(f"--methods must name at least one method, each once; got {args.methods!r}")
    _check_scoring(args, methods)
    name_in = getattr(args, "in") or "run"
    stem = Path(args.run_dir) / f"detect-{name_in}-vs-{args.out}"
    figures = [Path(f"{stem}-{method}.png") for method in methods]
    _check_outputs(args, stem.with_suffix(".csv"), *figures)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    background = load_run(args.background, args.checkpoint, args.device) if args.background else None
    inside = _scoring_data(run, getattr(args, "in"), args.in_root, args)
    outside = _scoring_data(run, args.out, args.out_root, args)
    results = []
    for method, figure in zip(methods, figures, strict=True):
        result = detect_sets(
            _score(args, run, background, inside, method), _score(args, run, background, outside, method)
        )
        result.plot(figure)
        results.append(result)
    table = detection_table(results)
    write_text(stem.with_suffix(".csv"), table.to_csv())
    print(f"in: {getattr(args, 'in') or run.config.dataset} ({args.split}), out: {args.out} ({args.split})")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {stem}.csv and {len(figures)} figure(s)")
    return 0


COMMANDS = {
    "train": train,
    "sample": sample,
    "reconstruct": reconstruct,
    "evaluate": evaluate,
    "compare": compare,
    "score": score,
    "detect": detect,
    "latents": latents,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        backend = getattr(args, "backend", None)
        with _rank_zero_stdout(backend), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            try:
                return COMMANDS[args.command](args)
            finally:
                for w in caught:
                    print(f"pyrovae {args.command}: warning: {w.message}", file=sys.stderr)
    except PyroVAEError as e:
        print(f"pyrovae {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:  # an I/O failure nothing above foresaw: one line, never a traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"pyrovae {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pyrovae {args.command}: interrupted{_after_interrupt(args)}", file=sys.stderr)
        return 130


def _after_interrupt(args: argparse.Namespace) -> str:
    """What an interrupted ``train`` left, and how to continue it."""
    from pyrovae.runs.directory import CHECKPOINT

    if args.command != "train" or not args.run_dir:
        return ""
    run_dir = Path(args.run_dir)
    if (run_dir / CHECKPOINT).is_file():
        return (
            f"; {run_dir / CHECKPOINT} holds the last completed epoch: continue with "
            f"pyrovae train --run-dir {run_dir} --resume"
        )
    return f"; no epoch was completed: start again in place with pyrovae train --run-dir {run_dir} --resume"


if __name__ == "__main__":
    sys.exit(main())
