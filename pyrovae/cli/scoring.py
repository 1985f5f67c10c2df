"""``pyrovae score`` and ``pyrovae detect``: anomaly scores of a data set under a run's model, and how well
they tell two data sets apart; the checks and the scoring pass they share."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.flags import (
    add_command,
    add_data_source,
    add_scoring,
    check_flags,
    check_outputs,
    names,
    output_dir,
    output_set,
)
from pyrovae.errors import ConfigError, unknown_name


def add_parser(sub) -> None:
    """The parsers of ``score`` and ``detect``, each ending in the options of anomaly scoring."""
    from pyrovae.analysis.anomaly import METHODS

    score = add_command(
        sub,
        "score",
        "score every input of a data set for how anomalous the run's model finds it",
        "Anomaly scores (higher = more anomalous) of every data point of a split, by one "
        "method of pyrovae.anomaly_scores. Writes scores-DATASET-SPLIT-METHOD.csv and .nc (per data "
        "point) and .json (summary) into RUN_DIR.",
    )
    add_data_source(score)
    score.add_argument("--method", choices=METHODS, default="nll", help="the anomaly score")
    add_scoring(score)
    detect = add_command(
        sub,
        "detect",
        "how well anomaly scores tell a data set from the run's own (AUROC, AUPRC, FPR95)",
        "Scores the split of an in-distribution data set (default: the run's) and of an out-of-distribution "
        "one by each method, and reports AUROC, AUPRC and FPR at 95 %% TPR. Writes detect-IN-vs-OUT.csv (the "
        "table) and detect-IN-vs-OUT-METHOD.png (histograms and ROC curve) into RUN_DIR.",
    )
    add_data_source(detect, "--in", "--in-root")
    add_data_source(detect, "--out", "--out-root", "the out-of-distribution data set", required=True)
    detect.add_argument(
        "--methods",
        default="nll,complexity,likelihood-regret",
        metavar="METHOD,METHOD,...",
        help="anomaly scores to compare, separated by commas",
    )
    add_scoring(detect)


def check_scoring(args: argparse.Namespace, methods: list[str], *alone: tuple[str, str]) -> None:
    """The scoring options, before anything is loaded; each pair of ``alone``, a flag and the flag it
    needs, refused when the first is given without the second."""
    from pyrovae.analysis.anomaly import METHODS

    for flag, needs in alone:
        if getattr(args, flag.lstrip("-").replace("-", "_")) and not getattr(args, needs.lstrip("-")):
            raise ConfigError(
                f"{flag} applies to the data set of {needs}; pass {needs} too, or leave {flag} out"
            )
    for method in methods:
        if method not in METHODS:
            raise unknown_name("anomaly score method", method, METHODS)
    check_flags(args, "num_samples", "group_size", "limit", "steps")
    if "likelihood-ratio" in methods and not args.background:
        raise ConfigError(
            "likelihood-ratio needs --background RUN_DIR: a run of the same architecture trained on "
            "perturbed inputs (see pyrovae.analysis.anomaly.perturb)"
        )


def other_binarize(config, dataset: str, chosen: str | None) -> str | None:
    """How ``dataset``, another than the run's, is binarized for the run's model: ``chosen`` (``--binarize``)
    if given; else as the run's data were. A run on data stored binary (binarized MNIST, drawn once by
    Bernoulli) under a Bernoulli likelihood gets the other data set's own binarization, a fixed Bernoulli draw
    for its valid and test splits, not its grey levels, which that likelihood cannot score."""
    from pyrovae.data.datasets import DEFAULT_BINARIZE
    from pyrovae.options import parse_spec

    if chosen is not None:
        return None if chosen == "none" else chosen
    mode = config.binarize_mode()
    if mode is None and parse_spec(config.likelihood_spec(), "likelihood")[0] == "bernoulli":
        return DEFAULT_BINARIZE.get(dataset)
    return mode


def scoring_data(run, dataset: str | None, root: str | None, args):
    """The split of ``dataset`` (default: the run's), binarized as the run's data (:func:`other_binarize`),
    limited."""
    from pyrovae.data.datasets import load
    from pyrovae.data.source import DataSource

    if dataset is None:
        data = run.load_data(args.split)
    else:
        data = load(
            dataset,
            args.split,
            root=root,
            binarize=other_binarize(run.config, dataset, getattr(args, "binarize", None)),
        )
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
        precision=args.precision,
    )


def score(args: argparse.Namespace) -> int:
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_json, write_text

    check_scoring(args, [args.method], ("--data-root", "--dataset"), ("--binarize", "--dataset"))
    stem = output_dir(args) / f"scores-{args.dataset or 'run'}-{args.split}-{args.method}"
    outputs = [stem.with_suffix(suffix) for suffix in (".csv", ".nc", ".json")]
    check_outputs(args, *outputs)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    background = load_run(args.background, args.checkpoint, args.device) if args.background else None
    data = scoring_data(run, args.dataset, args.data_root, args)
    result = score_with(args, run, background, data, args.method)
    results = {"dataset": args.dataset or run.config.dataset, "split": args.split, **result.to_json_dict()}
    with output_set(args, run, stem.name, results):
        write_text(outputs[0], result.to_dataframe().to_csv())
        result.to_netcdf(outputs[1])
        write_json(outputs[2], results)
    print(result.summary())
    print(f"wrote {stem}.csv, .nc and .json")
    return 0


def detect(args: argparse.Namespace) -> int:
    from pyrovae.analysis.detection import detect as detect_sets
    from pyrovae.analysis.detection import detection_table
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_text

    methods = names(args, "methods", "method")
    check_scoring(args, methods, ("--in-root", "--in"))
    stem = output_dir(args) / f"detect-{getattr(args, 'in') or 'run'}-vs-{args.out}"
    figures = [Path(f"{stem}-{method}.png") for method in methods]
    check_outputs(args, stem.with_suffix(".csv"), *figures)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    background = load_run(args.background, args.checkpoint, args.device) if args.background else None
    inside = scoring_data(run, getattr(args, "in"), args.in_root, args)
    outside = scoring_data(run, args.out, args.out_root, args)
    results = [
        detect_sets(
            score_with(args, run, background, inside, method),
            score_with(args, run, background, outside, method),
        )
        for method in methods
    ]
    table = detection_table(results)
    with output_set(args, run, stem.name, table.to_dict("index")):
        for result, figure in zip(results, figures, strict=True):
            result.plot(figure)
        write_text(stem.with_suffix(".csv"), table.to_csv())
    print(f"in: {getattr(args, 'in') or run.config.dataset} ({args.split}), out: {args.out} ({args.split})")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {stem}.csv and {len(figures)} figure(s)")
    return 0
