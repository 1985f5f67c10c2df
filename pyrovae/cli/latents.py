"""``pyrovae latents``: how a run's model uses its latents, and the latent space's pictures."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.flags import (
    SPLITS,
    add_command,
    add_common,
    add_limit,
    check_flags,
    check_outputs,
    output_dir,
    output_set,
    summary,
)
from pyrovae.errors import ConfigError


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "latents",
        "how the run's model uses its latents: active units, KL per dimension, I(x; z), pictures",
        "Active units (Cov_x E_q[z] > 0.01), the KL of every latent dimension, and the ELBO "
        "decomposed into reconstruction, the index-code mutual information I(x; z) and the marginal KL "
        "(Hoffman & Johnson 2016), on a split; then the pictures: the latent means in 2-D (coloured by "
        "label where the data set has labels), an interpolation between two inputs, a traversal of the "
        "most active dimensions, and samples from the prior. Writes latents-SPLIT.csv (one row per "
        "latent dimension), .json (summary), .png (KL and activity per dimension), "
        "latents-SPLIT-embedding.png, -interpolation.png, -traversal.png and -prior-samples.png into "
        "RUN_DIR; existing ones are replaced only with --overwrite.",
    )
    p.add_argument("--split", choices=SPLITS, default="test", help="the split analysed")
    add_limit(
        p,
        "analyse N data points drawn at random with --seed (default: the whole split; the mutual "
        "information costs N^2 density evaluations)",
    )
    p.add_argument("--num-particles", type=int, default=10, help="draws from the guide per data point")
    p.add_argument(
        "--embedding", choices=("pca", "tsne"), default="pca", help="how the latent means are shown in 2-D"
    )
    add_common(p, "seed of the draws, of --limit and of the pictures' inputs")


def run(args: argparse.Namespace) -> int:
    import torch

    from pyrovae import plots
    from pyrovae.analysis.latent_usage import latent_stats
    from pyrovae.data.source import DataSource
    from pyrovae.runs.run import load_run
    from pyrovae.storage import write_json, write_text

    if args.limit is not None and args.limit < 2:
        raise ConfigError("--limit must be at least 2 (the activity is a variance over data points)")
    check_flags(args, "num_particles")
    stem = output_dir(args) / f"latents-{args.split}"
    kinds = ("embedding", "interpolation", "traversal", "prior-samples")
    pictures = {kind: Path(f"{stem}-{kind}.png") for kind in kinds}
    tables = [stem.with_suffix(suffix) for suffix in (".csv", ".json", ".png")]
    check_outputs(args, *tables, *pictures.values())
    run = load_run(args.run_dir, args.checkpoint, args.device)
    data = run.load_data(args.split)
    source = DataSource(data)
    index = torch.randperm(len(source), generator=torch.Generator().manual_seed(args.seed))[: args.limit]
    if len(index) < 2:
        raise ConfigError(f"the {args.split} split has {len(index)} data point; latents needs at least 2")
    x = source.batch(index)
    labels = getattr(data, "targets", None)
    labels = None if labels is None else labels[index]
    stats = latent_stats(
        run.vae.model, run.vae.guide, x, args.num_particles, seed=args.seed, progress=not args.no_progress
    )
    subset = f"{len(index)} drawn at random with seed {args.seed}" if args.limit is not None else "all"
    results = summary(args, run, **stats.to_json_dict())
    with output_set(args, run, stem.name, results):
        write_text(stem.with_suffix(".csv"), stats.to_dataframe().to_csv(index=False))
        write_json(stem.with_suffix(".json"), results)
        stats.plot(stem.with_suffix(".png"))
        pair = run.vae
        first = stats.sites.index[0]
        top = stats.dims[stats.dims["site"] == first].sort_values("activity", ascending=False)
        embedding = {"method": args.embedding, "site": first, "seed": args.seed}
        plots.embedding(pair, x, labels, pictures["embedding"], **embedding)
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
