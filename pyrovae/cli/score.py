"""``pyrovae score``: anomaly scores of a data set under a run's model."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.flags import add_command, add_data_source, check_outputs
from pyrovae.cli.scoring import add_scoring, check_scoring, score_with, scoring_data


def add_parser(sub) -> None:
    from pyrovae.analysis.anomaly import METHODS

    p = add_command(
        sub,
        "score",
        "score every input of a data set for how anomalous the run's model finds it",
        "Anomaly scores (higher = more anomalous) of every data point of a split, by one "
        "method of pyrovae.anomaly_scores. Writes scores-DATASET-SPLIT-METHOD.csv and .nc (per data "
        "point) and .json (summary) into RUN_DIR.",
    )
    add_data_source(p)
    p.add_argument("--method", choices=METHODS, default="nll", help="the anomaly score")
    add_scoring(p)


def run(args: argparse.Namespace) -> int:
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_json, write_text

    check_scoring(args, [args.method])
    name = args.dataset or "run"
    stem = Path(args.run_dir) / f"scores-{name}-{args.split}-{args.method}"
    outputs = [stem.with_suffix(suffix) for suffix in (".csv", ".nc", ".json")]
    check_outputs(args, *outputs)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    background = load_run(args.background, args.checkpoint, args.device) if args.background else None
    data = scoring_data(run, args.dataset, args.data_root, args)
    result = score_with(args, run, background, data, args.method)
    write_text(outputs[0], result.to_dataframe().to_csv())
    result.to_netcdf(outputs[1])
    write_json(
        outputs[2],
        {"dataset": args.dataset or run.config.dataset, "split": args.split, **result.to_json_dict()},
    )
    print(result.summary())
    print(f"wrote {stem}.csv, .nc and .json")
    return 0
