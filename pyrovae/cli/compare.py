"""``pyrovae compare``: bounds and gradient signal-to-noise ratios of several estimators."""

from __future__ import annotations

import argparse

from pyrovae.cli.flags import (
    SPLITS,
    add_command,
    add_common,
    check_flags,
    check_outputs,
    names,
    output_dir,
    output_set,
)
from pyrovae.errors import ConfigError


def add_parser(sub) -> None:
    from pyrovae.analysis.comparison import DEFAULT_ESTIMATORS

    p = add_command(
        sub,
        "compare",
        "compare estimators' bounds and gradient signal-to-noise ratios on a trained model",
        "Draw the gradient of each estimator's loss --num-repeats times on one random batch of "
        "a split, at the run's parameters, and report the bound (mean and standard error), the median "
        "signal-to-noise ratio |mean|/sd of the guide's and the model's gradient elements, their mean "
        "variance and the time per step. Writes compare.csv and compare.png into RUN_DIR; existing ones "
        "are replaced only with --overwrite.",
    )
    p.add_argument(
        "--estimators",
        default=",".join(DEFAULT_ESTIMATORS),
        metavar="SPEC,SPEC,...",
        help="estimators NAME[:OPTION=VALUE]..., e.g. iwae:k=5 or renyi:alpha=0.5:k=5, separated by commas",
    )
    p.add_argument("--num-repeats", type=int, default=100, help="gradient draws per estimator")
    p.add_argument("--split", choices=SPLITS, default="test", help="the split the batch is drawn from")
    p.add_argument("--batch-size", type=int, default=100, help="data points in the batch")
    add_common(p, "seed of the batch and of the draws")


def run(args: argparse.Namespace) -> int:
    from pyrovae.analysis.comparison import compare as compare_estimators
    from pyrovae.data.source import DataSource
    from pyrovae.estimators import estimator
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_text

    if args.batch_size < 1 or args.num_repeats < 2:
        raise ConfigError("--batch-size must be at least 1 and --num-repeats at least 2")
    check_flags(args)
    estimators = {spec: estimator(spec) for spec in names(args, "estimators", "estimator")}
    table, figure = output_dir(args) / "compare.csv", output_dir(args) / "compare.png"
    check_outputs(args, table, figure)
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
    with output_set(args, run, "compare", result.to_json_dict()):
        write_text(table, result.to_dataframe().to_csv())
        result.plot(figure)
    print(f"{args.split} split, epoch {run.epoch} ({args.checkpoint} checkpoint), seed {args.seed}")
    print(result.summary())
    print(f"wrote {table} and {figure.name}")
    return 0
