"""``pyrovae sample`` and ``pyrovae reconstruct``: the pictures of a trained run."""

from __future__ import annotations

import argparse

from pyrovae.cli.flags import (
    SPLITS,
    add_checkpoint,
    add_command,
    add_device,
    check_flags,
    out_path,
    output_dir,
    output_set,
)


def add_parser(sub) -> None:
    """The parsers of ``sample`` and ``reconstruct``: the options they share, then their own."""
    s = add_command(sub, "sample", "draw images from a trained model's prior and decoder")
    r = add_command(sub, "reconstruct", "show data next to their reconstructions")
    for p, out in ((s, "samples.png"), (r, "reconstructions-SPLIT.png")):
        add_checkpoint(p)
        p.add_argument(
            "--out",
            metavar="FILE",
            help="where to write the figure, in the format its suffix names (.png, .pdf, .svg, ...; "
            f"default: RUN_DIR/{out})",
        )
        p.add_argument("--overwrite", action="store_true", help="replace the figure if it exists")
        p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
        add_device(p)
    s.add_argument("--num", type=int, default=100, help="number of samples")
    r.add_argument("--split", choices=SPLITS, default="test", help="the split the images are drawn from")
    r.add_argument("--num", type=int, default=20, help="number of images, drawn at random with --seed")


def picture_set(args: argparse.Namespace, out) -> str:
    """The output set of one picture: its file name in the run directory, its whole path elsewhere (one set
    per file, so that writing one never removes another)."""
    inside = out.resolve().parent == output_dir(args).resolve()
    return out.name if inside else str(out.resolve())


def sample(args: argparse.Namespace) -> int:
    import torch

    from pyrovae import plots
    from pyrovae.plots.figures import check_grid
    from pyrovae.runs.run import load_run

    check_flags(args, "num")
    out = out_path(args, "samples.png")
    run = load_run(args.run_dir, args.checkpoint, args.device)
    check_grid("num", args.num, args.num, run.vae.event_shape)
    torch.manual_seed(args.seed)
    images = run.vae.sample(args.num)
    with output_set(args, run, picture_set(args, out)):
        plots.image_grid(images, out, title=f"{plots.SAMPLES_TITLE} (epoch {run.epoch})")
    print(f"wrote {out}")
    return 0


def reconstruct(args: argparse.Namespace) -> int:
    import torch

    from pyrovae import plots
    from pyrovae.data.source import DataSource
    from pyrovae.devices import of_model
    from pyrovae.plots.figures import check_grid
    from pyrovae.runs.run import load_run

    check_flags(args, "num")
    out = out_path(args, f"reconstructions-{args.split}.png")
    run = load_run(args.run_dir, args.checkpoint, args.device)
    check_grid("num", args.num, 2 * args.num, run.vae.event_shape)
    data = DataSource(run.load_data(args.split))
    torch.manual_seed(args.seed)
    x = data.sample(args.num, seed=args.seed)[0].to(of_model(run.vae))
    recon = run.vae.reconstruct(x)
    with output_set(args, run, picture_set(args, out)):
        plots.reconstructions(x, recon, out)
    print(f"wrote {out} ({len(x)} {args.split} images drawn at random with seed {args.seed})")
    return 0
