"""What the arithmetic precision (:mod:`pyrovae.precision`) does to log p(x) and to the learning curve.

1. ``evaluate``: IS-K estimates of log p(x) of a trained run (``--run-dir``, its best parameters) on
   ``--images`` binarized-MNIST test images drawn at random (the test file is ordered by class), at each
   precision, with the same seed: the same draws, so that the paired difference per image is the precision's
   effect alone. Reported: the mean and its standard error for each, the mean paired difference with its
   standard error, the largest per-image difference beside the median Monte Carlo standard error of an
   estimate, and the wall time.
2. ``train``: the run's model and recipe (its ``config.json``: architecture, optimizer, warm-up) trained
   afresh for ``--epochs`` epochs from the same seed at each precision, and at the first precision from the
   next seed too, whose difference is the spread between two runs that differ in their draws alone; the
   per-epoch validation bounds, and a figure of the curves and of their differences.

Run from the repository root (``--precision`` lists the precisions compared, the first the reference)::

    python benchmarks/bench_precision.py evaluate --run-dir RUN [--images 1000] [-K 5000] [--device cuda]
    python benchmarks/bench_precision.py train --run-dir RUN [--epochs 10] [--out DIR] [--device cuda]

On a CPU, ``tf32`` computes as ``highest`` (there is no TF32 arithmetic), so the default compares ``highest``
and ``bf16`` there, and all three on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import pyrovae
from pyrovae.runs.run import RunConfig, load_run

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binarized_mnist"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def evaluate(args, device: torch.device, precisions: list[str]) -> dict:
    run = load_run(args.run_dir, device=device)
    test = pyrovae.load("binarized-mnist", "test", root=args.data_root)
    chosen = torch.randperm(len(test), generator=torch.Generator().manual_seed(args.seed))[: args.images]
    x = test.batch(chosen)
    results, seconds = {}, {}
    for precision in precisions:  # warm-ups: the first calls' one-off costs
        pyrovae.log_likelihood(run.vae.model, run.vae.guide, x[:2], 10, precision=precision, progress=False)
    for precision in precisions:
        sync(device)
        start = time.perf_counter()
        results[precision] = pyrovae.log_likelihood(
            run.vae.model,
            run.vae.guide,
            x,
            args.num_samples,
            seed=args.seed,
            precision=precision,
            progress=False,
        )
        sync(device)
        seconds[precision] = time.perf_counter() - start
    reference = results[precisions[0]]
    figures = {"images": args.images, "num_samples": args.num_samples, "device": str(device), "rows": {}}
    print(f"IS-{args.num_samples} on {args.images} random test images, {args.run_dir}, {device}")
    for precision, result in results.items():
        d = (result.log_px - reference.log_px).double()
        row = {
            "mean_log_px": result.mean,
            "stderr": result.stderr,
            "difference": float(d.mean()),
            "difference_se": float(d.std() / math.sqrt(len(d))) if len(d) > 1 else math.nan,
            "largest_difference": float(d.abs().max()),
            "median_mc_se": float(result.log_px_se.median()),
            "seconds": seconds[precision],
        }
        figures["rows"][precision] = row
        print(
            f"  {precision:>8}: {row['mean_log_px']:.3f} ± {row['stderr']:.3f}; minus {precisions[0]}: "
            f"{row['difference']:+.4f} ± {row['difference_se']:.4f} (largest per image "
            f"{row['largest_difference']:.4f}; median Monte Carlo se {row['median_mc_se']:.4f}); "
            f"{row['seconds']:.1f} s"
        )
    return figures


def train(args, device: torch.device, precisions: list[str]) -> dict:
    config = RunConfig.read(Path(args.run_dir) / "config.json")
    data = dict(root=args.data_root) if config.dataset == "binarized-mnist" else {}
    train_set = pyrovae.load(config.dataset, "train", **data)
    valid_set = pyrovae.load(config.dataset, "valid", **data)
    options = config.fit_options()
    options.update(epochs=args.epochs, patience=None, device=device, progress=False)
    # each precision from the same seed, and the reference from the next seed: the spread between two runs
    # that differ in their draws alone, the yardstick of the precisions' differences
    runs = [(precision, args.seed) for precision in precisions] + [(precisions[0], args.seed + 1)]
    histories = {}
    for precision, seed in runs:
        torch.manual_seed(seed)
        vae = config.build_vae(train_set.event_shape)
        options.update(estimator=config.build_estimator(), precision=precision, seed=seed)
        label = precision if seed == args.seed else f"{precision}, seed {seed}"
        histories[label] = pyrovae.fit(vae, train_set, valid_set, **options).history.set_index("epoch")
        print(f"  {label:>16}: " + ", ".join(f"{v:.3f}" for v in histories[label]["valid_loss"]))
    reference = histories[precisions[0]]["valid_loss"]
    figures = {"epochs": args.epochs, "device": str(device), "seed": args.seed, "rows": {}}
    for label, history in histories.items():
        figures["rows"][label] = {
            "valid_loss": history["valid_loss"].tolist(),
            "valid_difference": (history["valid_loss"] - reference).tolist(),
            "seconds_per_epoch": float(history["seconds"].mean()),
        }
    if args.out:
        plot(histories, precisions[0], Path(args.out) / "precision.png")
    return figures


def plot(histories: dict, reference: str, path: Path) -> None:
    """The validation bounds (at beta = 1, whatever the warm-up) of each run, and their differences from the
    reference's."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    curves, differences = fig.subplots(1, 2)
    for i, (label, history) in enumerate(histories.items()):
        style = dict(color=f"C{i}", ls="--" if "seed" in label else "-")
        curves.plot(history.index, history["valid_loss"], label=label, **style)
        if label != reference:
            difference = history["valid_loss"] - histories[reference]["valid_loss"]
            differences.plot(history.index, difference, label=label, **style)
    curves.set(xlabel="epoch", ylabel="validation -ELBO, nats", title="learning curves")
    curves.legend()
    differences.axhline(0, color="grey", lw=0.5)
    differences.set(xlabel="epoch", ylabel="nats", title=f"validation -ELBO minus {reference}'s (same seed)")
    differences.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("evaluate", "train"))
    parser.add_argument(
        "--run-dir", required=True, help="a trained run (evaluate) or the recipe to train (train)"
    )
    parser.add_argument("--precision", help="precisions compared, comma-separated, the first the reference")
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("-K", "--num-samples", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--out", help="directory of the figure (train)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = pyrovae.devices.resolve(args.device)
    default = "highest,tf32,bf16" if device.type == "cuda" else "highest,bf16"
    precisions = (args.precision or default).split(",")
    figures = (evaluate if args.what == "evaluate" else train)(args, device, precisions)
    figures["precisions"] = precisions
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
