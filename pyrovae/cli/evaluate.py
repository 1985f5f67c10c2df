"""``pyrovae evaluate``: log p(x) per data point and the ladder of bounds of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.flags import (
    SPLITS,
    add_command,
    add_common,
    add_data_source,
    add_limit,
    add_precision,
    check_flags,
    check_outputs,
    default_bounds,
    output_dir,
    output_set,
    parse_ks,
    summary,
)
from pyrovae.cli.scoring import scoring_data
from pyrovae.errors import ConfigError


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "evaluate",
        "estimate log p(x) per data point and the ladder of bounds",
        "Importance-sampled log p(x) of every data point of a split, with standard errors, effective sample "
        "sizes and PSIS k-hat, and the ladder ELBO <= IWAE-k, optionally with annealed importance sampling "
        "rows (--ais-steps) and the BDMC sandwich on simulated data (--bdmc). Writes evaluation-SPLIT.json "
        "(summary), .csv and .nc (per data point; BDMC's simulated points in evaluation-SPLIT-bdmc.csv and "
        "the .nc) and bounds-SPLIT.png into RUN_DIR; existing ones are replaced only with --overwrite.",
    )
    add_data_source(p)
    p.add_argument("--split", choices=SPLITS, default="test", help="the split to evaluate")
    p.add_argument("--num-samples", type=int, default=5000, help="importance samples K per data point")
    p.add_argument(
        "--bounds",
        type=parse_ks,
        metavar="K1,K2,...",
        help="k of the IWAE-k rows of the ladder, k = 1 being the ELBO (default: the powers of ten below "
        "--num-samples and --num-samples itself, e.g. 1,10,100,1000,5000)",
    )
    add_limit(p, "evaluate N data points of the split drawn at random with --seed (default: the whole split)")
    p.add_argument(
        "--ais-steps",
        type=parse_ks,
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
    add_precision(p)
    add_common(p, "seed of the importance samples and of --limit", backend=True)


def run(args: argparse.Namespace) -> int:
    import xarray as xr

    from pyrovae import distributed
    from pyrovae.data.source import DataSource
    from pyrovae.infer.ladder import bounds
    from pyrovae.precision import described
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_json, write_netcdf, write_text

    check_flags(args, "num_samples", "ais_chains", "leapfrog_steps", "limit")
    ks = args.bounds or default_bounds(args.num_samples)
    if max(ks) > args.num_samples:
        raise ConfigError(
            f"--bounds asks for k = {max(ks)} but --num-samples is {args.num_samples}; "
            "raise --num-samples or drop the larger k"
        )
    if args.bdmc < 0 or (args.bdmc_steps is not None and args.bdmc_steps < 1):
        raise ConfigError("--bdmc must be at least 0 and --bdmc-steps at least 1")
    if not args.max_memory > 0:
        raise ConfigError(f"--max-memory must be a positive number of MiB; got {args.max_memory:g}")
    name = f"{args.dataset}-{args.split}" if args.dataset else args.split  # another data set: its own files
    stem = output_dir(args) / f"evaluation-{name}"
    bdmc_csv, figure = Path(f"{stem}-bdmc.csv"), output_dir(args) / f"bounds-{name}.png"
    outputs = [stem.with_suffix(suffix) for suffix in (".json", ".csv", ".nc")]
    check_outputs(args, *outputs, *([bdmc_csv] if args.bdmc > 0 else []), figure)
    run = load_run(args.run_dir, args.checkpoint, args.device)
    data = scoring_data(run, args.dataset, args.data_root, args)
    # a random subset: a data set may be ordered by class (binarized MNIST's is)
    subset = "" if args.limit is None else f" ({len(DataSource(data))} drawn at random with seed {args.seed})"
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
        precision=args.precision,
    )
    if not distributed.is_main():  # every rank holds the gathered results; rank 0 writes them
        return 0
    ll = ladder.log_likelihood
    results = summary(args, run, log_likelihood=ll.to_json_dict(), bounds=ladder.to_json_dict())
    written = f"{stem}.json, .csv, .nc"
    # an earlier evaluation's -bdmc.csv goes unless this one writes it
    with output_set(args, run, stem.name, results):
        write_json(stem.with_suffix(".json"), results)
        write_text(stem.with_suffix(".csv"), ll.to_dataframe().join(ladder.to_dataframe()).to_csv())
        if ladder.bdmc is not None:
            write_text(bdmc_csv, ladder.bdmc.to_dataframe().to_csv())
            written += f", {bdmc_csv.name}"
        merged = xr.merge([ll.to_xarray(), ladder.to_xarray()], combine_attrs="drop")
        merged.attrs["precision"] = args.precision
        write_netcdf(stem.with_suffix(".nc"), merged)
        ladder.plot(figure)
    where = f"device {run.vae_device}{described(args.precision)}"
    print(f"{args.dataset or run.config.dataset} {args.split} split{subset}, {where}")
    print(ladder.summary())  # the importance-sampled estimate's diagnostics and verdict with it
    print(f"wrote {written} and {figure.name}")
    return 0
