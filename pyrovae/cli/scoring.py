"""What ``pyrovae score`` and ``pyrovae detect`` share: their options and one scoring pass."""

from __future__ import annotations

import argparse

from pyrovae.cli.flags import SPLITS, add_common, add_limit, check_flags
from pyrovae.errors import ConfigError


def add_scoring(p: argparse.ArgumentParser) -> None:
    """The options of anomaly scoring that ``score`` and ``detect`` share."""
    p.add_argument("--split", choices=SPLITS, default="test", help="the split scored")
    p.add_argument("--num-samples", type=int, default=1000, help="importance samples K per data point")
    add_limit(p, "score N data points drawn at random (default: the whole split)")
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
    add_common(p, "seed of the draws and of --limit")


def check_scoring(args: argparse.Namespace, methods: list[str]) -> None:
    """The scoring options, before anything is loaded."""
    from pyrovae.analysis.anomaly import METHODS
    from pyrovae.errors import unknown_name

    for method in methods:
        if method not in METHODS:
            raise unknown_name("anomaly score method", method, METHODS)
    check_flags(args, "num_samples", "group_size", "limit", "steps")
    if "likelihood-ratio" in methods and not args.background:
        raise ConfigError(
            "likelihood-ratio needs --background RUN_DIR: a run of the same architecture trained on "
            "perturbed inputs (see pyrovae.analysis.anomaly.perturb)"
        )


def scoring_data(run, dataset: str | None, root: str | None, args):
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


def score_with(args, run, background, data, method: str):
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
