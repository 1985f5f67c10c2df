"""``pyrovae detect``: how well anomaly scores separate two data sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.flags import HelpFormatter, add_data_source, add_run_dir, check_outputs
from pyrovae.cli.scoring import add_scoring, check_scoring, score_with, scoring_data
from pyrovae.errors import ConfigError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "detect",
        help="how well anomaly scores tell a data set from the run's own (AUROC, AUPRC, FPR95)",
        description="Scores the split of an in-distribution data set (default: the run's) and of an "
        "out-of-distribution one by each method, and reports AUROC, AUPRC and FPR at 95 %% TPR. Writes "
        "detect-IN-vs-OUT.csv (the table) and detect-IN-vs-OUT-METHOD.png (histograms and ROC curve) "
        "into RUN_DIR.",
        formatter_class=HelpFormatter,
    )
    add_run_dir(p)
    add_data_source(p, "--in", "--in-root")
    from pyrovae.data.datasets import NAMES

    p.add_argument("--out", choices=NAMES, required=True, help="the out-of-distribution data set")
    p.add_argument("--out-root", metavar="DIR", help="directory with the files of --out (default: its own)")
    p.add_argument(
        "--methods",
        default="nll,complexity,likelihood-regret",
        metavar="METHOD,METHOD,...",
        help="anomaly scores to compare, separated by commas",
    )
    add_scoring(p)
    return p


def run(args: argparse.Namespace) -> int:
    from pyrovae.analysis.detection import detect as detect_sets
    from pyrovae.analysis.detection import detection_table
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_text

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or len(set(methods)) != len(methods):
        raise ConfigError(f"--methods must name at least one method, each once; got {args.methods!r}")
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
