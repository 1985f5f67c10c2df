"""``pyrovae train``: train a VAE on a named data set into a run directory."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from pyrovae.cli.flags import (
    DEVICE,
    PRECISION,
    SPLITS,
    add_backend,
    add_command,
    add_threads,
    hidden_sizes,
    optional,
)
from pyrovae.errors import ConfigError
from pyrovae.options import check_option

#: what training takes, in copies of the parameters: theirs, the gradients, the optimizer's two moments, the
#: best parameters and the checkpoint's copy
TRAINING_COPIES = 6
#: at most this many test images in the embedding figure ``pyrovae train`` writes
EMBEDDED = 2000


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "train",
        "train a VAE and write a run directory",
        "Train a VAE by SVI. Writes config.json, a checkpoint every epoch, history.csv, figures (samples, "
        "reconstructions, learning curves, and the test set's latent space coloured by class where it has "
        "labels) and results.json with the test bound. With --resume, the options that define the model, its "
        "data and its objective are the run's (giving another value is an error); --epochs, --patience, "
        "--lr, --clip-norm, --device, --data-root and --download may change.",
        run_dir=False,
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
    add_backend(p)
    _option(p, "--device", DEVICE)
    add_threads(p)
    _tracking_flags(p)
    p.add_argument(
        "--test-samples",
        type=int,
        default=1000,
        metavar="K",
        help="importance samples per test image for the final log p(x) estimate, 0 to skip",
    )
    _config_flags(p)


def _tracking_flags(p: argparse.ArgumentParser) -> None:
    """--log and the options of the trackers (:mod:`pyrovae.tracking`)."""
    g = p.add_argument_group(
        "experiment tracking (each tracker an extra: pip install 'pyrovae[tensorboard]')"
    )
    g.add_argument(
        "--log",
        metavar="TRACKERS",
        help="log the run, and every later command's results on it, to tensorboard, mlflow or both "
        "(tensorboard,mlflow); a resumed run logs on to the trackers it has",
    )
    g.add_argument("--log-dir", metavar="DIR", help="where the trackers write (default: RUN_DIR/logs)")
    g.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow's tracking store (default: MLFLOW_TRACKING_URI if set, else sqlite:///LOG_DIR/mlflow.db)",
    )
    g.add_argument("--experiment", default="pyrovae", help="the MLflow experiment of the run")
    g.add_argument("--log-every-step", action="store_true", help="log every step's loss too")


def _trackers(args: argparse.Namespace, run_dir: Path) -> list:
    """The trackers of --log, and on --resume those the run has, each installed and its options checked,
    before anything is written."""
    from pyrovae.cli.flags import names
    from pyrovae.errors import unknown_name
    from pyrovae.tracking import RECORD, TRACKERS, read_record

    kinds = names(args, "log", "tracker") if args.log is not None else []
    for kind in kinds:
        if kind not in TRACKERS:
            raise unknown_name("tracker", kind, TRACKERS)
    recorded = read_record(run_dir) if args.resume else {}
    given = [flag for flag in ("log_dir", "tracking_uri") if getattr(args, flag) is not None]
    if (given or args.log_every_step) and not (kinds or recorded):
        raise ConfigError("--log-dir, --tracking-uri and --log-every-step go with --log TRACKERS; add --log")
    trackers = []
    for kind in dict.fromkeys([*kinds, *recorded]):
        options = {"per_step": args.log_every_step or recorded.get(kind, {}).get("per_step", False)}
        if kind == "mlflow":
            options.update(tracking_uri=args.tracking_uri, experiment=args.experiment)
        try:
            tracker = TRACKERS[kind](args.log_dir, **options)
        except ConfigError as e:
            if kind in kinds:
                raise
            raise ConfigError(
                f"{e}; or remove {kind!r} from {run_dir / RECORD} to resume without it"
            ) from None
        tracker.check()
        trackers.append(tracker)
    return trackers


#: the parser of a configuration option by the type of its field of RunConfig
TYPES = {"int": int, "float": float, "int | None": optional(int), "float | None": optional(float)}


def _option(group, flag: str, help: str, **kwargs) -> None:
    """A configuration option: absent from the parsed arguments unless given (so that a value
    that parses to None, such as --binarize none, is kept), parsed as its field of RunConfig
    unless told otherwise, its help ending in its default."""
    from pyrovae.runs.run import RunConfig

    name = flag[2:].replace("-", "_")
    kind = {f.name: f.type for f in dataclasses.fields(RunConfig)}[name]
    if kind in TYPES:
        kwargs.setdefault("type", TYPES[kind])
    default = kwargs.pop("shown", getattr(RunConfig(), name))
    if isinstance(default, list):
        default = ",".join(map(str, default))
    group.add_argument(flag, default=argparse.SUPPRESS, help=f"{help} (default: {default})", **kwargs)


def _config_flags(p: argparse.ArgumentParser) -> None:
    """The options of :class:`~pyrovae.runs.run.RunConfig`: data, model and training."""
    from pyrovae.data.datasets import NAMES
    from pyrovae.estimators import ESTIMATORS
    from pyrovae.graphs import COMPILE_MODES
    from pyrovae.models.likelihoods import LIKELIHOODS
    from pyrovae.models.nn import ACTIVATIONS, NETWORKS
    from pyrovae.models.priors import DEFAULT_COMPONENTS, PRIORS
    from pyrovae.precision import PRECISIONS
    from pyrovae.runs.run import MODELS
    from pyrovae.train.trainer import OPTIMIZERS

    g = p.add_argument_group("data")
    _option(g, "--dataset", "data set", choices=NAMES)
    _option(g, "--data-root", "directory with the data files", shown="the data set's own")
    _option(g, "--download", "download missing data files", action="store_true")
    _option(
        g,
        "--binarize",
        "dynamic, threshold, none, or default (the data set's own under a bernoulli likelihood, "
        "none under others)",
        type=optional(str),
    )
    g = p.add_argument_group("model")
    _option(
        g,
        "--likelihood",
        f"observation model p(x|z): {', '.join(LIKELIHOODS)} (binomial:levels=L names the grey levels; "
        "a data set's own are known; bernoulli:clamp=C clamps the probabilities to [C, 1 - C]), or "
        "default: binomial on digits, bernoulli otherwise",
    )
    _option(g, "--likelihood-scale", "Gaussian likelihood's (initial) scale")
    _option(g, "--model", "vae, or hvae: two stochastic layers z2 -> z1 -> x", choices=MODELS)
    _option(g, "--prior", "prior of the (top) latent", choices=PRIORS)
    _option(
        g,
        "--prior-components",
        "components of the mixture prior or pseudo-inputs of the vamp prior",
        metavar="K",
        shown=", ".join(f"{k} for {n}" for n, k in DEFAULT_COMPONENTS.items()),
    )
    _option(g, "--network", "encoder and decoder family", choices=NETWORKS)
    _option(g, "--latent-dim", "dimension of z (of the bottom layer z1 of an hvae)")
    _option(g, "--latent-dim2", "dimension of the top layer z2 of an hvae", shown="--latent-dim")
    _option(g, "--hidden", "hidden layer sizes, comma separated, e.g. 400 or 300,300", type=hidden_sizes)
    _option(g, "--activation", "nonlinearity between layers", choices=sorted(ACTIVATIONS))
    g = p.add_argument_group("training")
    _option(g, "--estimator", "the bound SVI maximizes", choices=sorted(ESTIMATORS))
    _option(
        g,
        "--k",
        "particles per data point of the multi-sample estimators (per group for miwae and piwae)",
        shown="the estimator's",
    )
    _option(g, "--alpha", "order of the renyi bound", shown="the estimator's")
    _option(g, "--m", "groups of k particles of miwae and piwae", shown="the estimator's")
    _option(g, "--mix", "weight of the ELBO in ciwae's mix with IWAE-k", shown="the estimator's")
    _option(g, "--beta", "weight of the KL (latent) part of any estimator (beta-VAE)", shown=1)
    _option(g, "--epochs", "epochs to train (in all, counting those of a resumed run)")
    _option(g, "--batch-size", "data points per step")
    _option(g, "--lr", "learning rate")
    _option(g, "--optimizer", "optimizer (adam-normgrad: the VampPrior paper's)", choices=tuple(OPTIMIZERS))
    _option(g, "--kl-warmup", "epochs of linear KL warm-up, 0 for none")
    _option(g, "--clip-norm", "clip gradients to this global norm, none for no clipping")
    _option(g, "--patience", "early stopping patience in epochs, none for no early stopping")
    _option(g, "--seed", "seed of the initial parameters, the shuffling and the draws")
    _option(
        g,
        "--compile",
        "how steps run: captured as a graph and replayed (auto, graph; a CUDA graph on a GPU), that graph "
        "compiled (inductor), or eagerly (off)",
        choices=COMPILE_MODES,
    )
    _option(
        g,
        "--precision",
        PRECISION,
        choices=PRECISIONS,
    )


def _train_config(args: argparse.Namespace, run_dir: Path | None):
    """The run's configuration: with --resume, the checkpoint's (or, before the first epoch was saved,
    config.json's) with the options a resumed run may change; else --config's or the defaults; then the flags
    given. A flag that would change a resumed run's model, data or objective is an error naming it."""
    from pyrovae.runs.directory import CHECKPOINT
    from pyrovae.runs.run import MUTABLE, RunConfig

    if args.config and args.resume:
        raise ConfigError(
            "--resume takes the run's configuration from its checkpoint; drop --config and give the "
            "options to change (--epochs, --lr, ...) as flags"
        )
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig) if hasattr(args, f.name)}
    # with --resume there is a run directory; what it saved (if anything) is the run's
    stored = RunConfig.of_run(run_dir) if args.resume else None
    if args.resume and (run_dir / CHECKPOINT).is_file() and (stored is None or stored.dataset is None):
        raise ConfigError(
            f"the run in {run_dir} was trained from Python (pyrovae.fit) "
            + ("on data of its own" if stored else "without a configuration pyrovae can rebuild it from")
            + "; resume it from Python: pyrovae.fit(vae, data, run_dir=..., resume=True, epochs=...)"
        )
    resumed = stored is not None
    base = stored or (RunConfig.read(args.config) if args.config else RunConfig())
    config = RunConfig.from_dict({**base.to_dict(), **given})
    changed = {k: v for k, v in base.differences(config).items() if k not in MUTABLE}
    if resumed and changed:
        listed = ", ".join(
            f"--{k.replace('_', '-')} {new!r} (the run's: {old!r})" for k, (old, new) in changed.items()
        )
        raise ConfigError(
            f"--resume keeps the run's model, data and objective, but {listed} would change them; drop "
            f"{'that option' if len(changed) == 1 else 'those options'}, or start a new run with "
            "--overwrite or another --run-dir"
        )
    return config


def _check_size(config, event_shape, device) -> None:
    """Refuse, before anything is allocated, a model whose training needs more than the device's memory:
    counted on the meta device, its parameters, their gradients, the optimizer's two moments, the best
    parameters and the checkpoint's copy."""
    import torch

    from pyrovae.devices import check_memory

    with torch.device("meta"):
        size = sum(p.numel() for p in config.build_vae(event_shape).parameters())
    what = f"training a model of {size:,} parameters (with --hidden {','.join(map(str, config.hidden))})"
    check_memory("latent_dim", config.latent_dim, TRAINING_COPIES * 4 * size, device, what)


def run(args: argparse.Namespace) -> int:
    import pyro
    import torch

    from pyrovae import devices, distributed, plots
    from pyrovae.data.source import DataSource
    from pyrovae.infer.importance import log_likelihood
    from pyrovae.runs.directory import RESULTS, RunDirectory, checkpoint_bytes
    from pyrovae.storage import write_json
    from pyrovae.tracking import log_results
    from pyrovae.train.loop import check_data, fit
    from pyrovae.train.trainer import Trainer

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
    trackers = _trackers(args, run_dir)
    train_data, valid_data, test = (config.load_data(split) for split in SPLITS)
    _check_size(config, train_data.event_shape, device)
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
            threads=None,  # the command's (--threads)
            callbacks=trackers,
        )
        print(result.summary())
        torch.manual_seed(config.seed)
        results = {"epochs": int(result.history["epoch"].iloc[-1]), "test_size": len(test)}
        # the test set's negative ELBO, whatever the estimator trained the model (sharded across ranks)
        trainer = Trainer(result.vae, len(test), device=devices.of_model(result.vae))
        results["test_negative_elbo"] = trainer.evaluate(test)
        print(f"test negative ELBO: {results['test_negative_elbo']:.3f} nats per image ({len(test)} images)")
        if args.test_samples > 0:
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
            results["test_log_likelihood"] = ll.to_json_dict()  # with the ESS, k-hat and verdict
            print(
                f"test log p(x), importance sampled with K = {args.test_samples}: "
                f"{ll.mean:.3f} ± {ll.stderr:.3f} nats per image (NLL {ll.nll:.3f})"
            )
            print(ll.verdict())
        if distributed.is_main():
            write_json(run_dir / RESULTS, results)
            embedding = run_dir / "embedding.png"
            if test.targets is not None:  # the latent space, coloured by class
                with distributed.alone():
                    plots.embedding(
                        result.vae, test, test.targets, embedding, seed=config.seed, limit=EMBEDDED
                    )
            epoch = result.best_epoch or results["epochs"]
            log_results(run_dir, "test", results, [embedding] if embedding.is_file() else [], epoch)
    print(f"run directory: {run_dir}")
    return 0
