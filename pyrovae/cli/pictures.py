"""``pyrovae sample`` and ``pyrovae reconstruct``: the pictures of a trained run."""

from __future__ import annotations

import argparse

from pyrovae.cli.flags import check_flags, out_path


def sample(args: argparse.Namespace) -> int:
    import torch

    from pyrovae import plots
    from pyrovae.runs.run import load_run

    check_flags(args, "num")
    out = out_path(args, "samples.png")
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

    check_flags(args, "num")
    out = out_path(args, f"reconstructions-{args.split}.png")
    run = load_run(args.run_dir, args.checkpoint, args.device)
    data = DataSource(run.load_data(args.split))
    torch.manual_seed(args.seed)
    x = data.sample(args.num, seed=args.seed)[0].to(of_model(run.vae))
    plots.reconstructions(x, run.vae.reconstruct(x), out)
    print(f"wrote {out} ({len(x)} {args.split} images drawn at random with seed {args.seed})")
    return 0
