"""``pyrovae detect``: how well anomaly scores separate two data sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.flags import add_command, add_data_source, check_outputs, names
from pyrovae.cli.scoring import add_scoring, check_scoring, score_with, scoring_data


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "detect",
        "how well anomaly scores tell a data set from the run's own (AUROC, AUPRC, FPR95)",
        "Scores the split of an in-distribution data set (default: the run's) and of an "
        "out-of-distribution one by each method, and reports AUROC, AUPRC and FPR at 95 %% TPR. Writes "
        "detect-IN-vs-OUT.csv (the table) and detect-IN-vs-OUT-METHOD.png (histograms and ROC curve) "
        "into RUN_DIR.",
    )
    add_data_source(p, "--in", "--in-root")
    add_data_source(p, "--out", "--out-root", "the out-of-distribution data set", required=True)
    p.add_argument(
        "--methods",
        default="nll,complexity,likelihood-regret",
        metavar="METHOD,METHOD,...",
        help="anomaly scores to compare, separated by commas",
    )
    add_scoring(p)


def run(args: argparse.Namespace) -> int:
    from pyrovae.analysis.detection import detect as detect_sets
    from pyrovae.analysis.detection import detection_table
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_text

    methods = names(args, "methods", "method")
    check_scoring(args, methods)
    name_in = getattr(args, "in") or "run"
    stem = Path(args.run_dir) / f"detect-{name_in}-vs-{args.out}"
    figures = [Path(f"{stem}-{method}.png") for method in methods]
    check_outputs(args, stem.with_suffix(".csv"), *figures)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    background = load_run(args.background, args.checkpoint, args.device) if args.background else None
    inside = scoring_data(run, getattr(args, "in"), args.in_root, args)
    outside = scoring_data(run, args.out, args.out_root, args)
    results = []
    for method, figure in zip(methods, figures, strict=True):
        result = detect_sets(
            score_with(args, run, background, inside, method),
            score_with(args, run, background, outside, method),
        )
        result.plot(figure)
        results.append(result)
    table = detection_table(results)
    write_text(stem.with_suffix(".csv"), table.to_csv())
    print(f"in: {getattr(args, 'in') or run.config.dataset} ({args.split}), out: {args.out} ({args.split})")
    print(table.to_string(float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {stem}.csv and {len(figures)} figure(s)")
    return 0
