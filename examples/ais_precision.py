"""Issue 27's measurement: the per-point error of AIS on a linear-Gaussian model with an exact log p(x).

PPCA with 10-dimensional data and 3 latents (tests/toy_models.py), 20 data points, a mean-field guide whose
mean is shifted by 0.5 and whose scale is 0.7 times the posterior's, 16 chains, HMC with 10 leapfrog steps,
seed 0. Prints, for each number of steps, the mean and standard deviation over the points of AIS - exact, the
mean standard error over the chains, the mean acceptance, the median step size and the wall time, for the
default (adapted) step sizes and for fixed ones.

    OMP_NUM_THREADS=1 python examples/ais_precision.py --steps 200,1000 --fixed 0.05,0.1,0.2

With ``--run-dir`` (a trained run, such as ``runs/bmnist10``), it measures on ``--limit`` random test
images of that run instead, where log p(x) is unknown: the mean of two seeds' estimates (a lower bound:
higher is tighter) and the per-image spread of one run (the standard deviation over the images of the
difference between the two seeds, divided by the square root of 2).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from toy_models import PPCA, offset_guide  # noqa: E402

import pyrovae  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", default="200,1000")
    p.add_argument("--fixed", default="0.05")
    p.add_argument("--jitter", type=float, default=0.5)
    p.add_argument("--run-dir", help="measure on this run's test images instead")
    p.add_argument("--limit", type=int, default=32, help="with --run-dir: test images drawn at random")
    args = p.parse_args()
    if args.run_dir:
        on_a_run(args)
        return
    model = PPCA(data_dim=10, latent_dim=3)
    x = model.sample(20)
    exact = model.log_px(x)
    guide = offset_guide(model, 0.5, 0.7)

    def run(steps: int, **options) -> str:
        start = time.perf_counter()
        r = pyrovae.ais(
            model.model, guide, x, num_steps=steps, num_chains=16, leapfrog_steps=10, seed=0, progress=False,
            step_size_jitter=args.jitter, **options,
        )  # fmt: skip
        err = r.log_px.double() - exact
        return (
            f"mean {err.mean():+.3f}  sd {err.std():.3f}  se {r.log_px_se.mean():.3f}  "
            f"acceptance {r.acceptance.mean():.2f}  step {r.step_size.median():.3g}  "
            f"{time.perf_counter() - start:.1f} s"
        )

    for steps in map(int, args.steps.split(",")):
        print(f"AIS-{steps} adapted:     {run(steps)}", flush=True)
        for eps in map(float, args.fixed.split(",")):
            print(
                f"AIS-{steps} fixed {eps:<6g}: {run(steps, adapt_step_size=False, step_size=eps)}", flush=True
            )


def on_a_run(args: argparse.Namespace) -> None:
    import torch

    from pyrovae.data.source import DataSource

    run = pyrovae.load_run(args.run_dir)
    test = run.load_data("test")
    index = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.limit]
    x = DataSource(test).batch(index)[0]  # the test file is ordered by class: a random subset

    def run_twice(steps: int, **options) -> str:
        start, estimates = time.perf_counter(), []
        for seed in (0, 1):
            r = pyrovae.ais(
                run.vae.model, run.vae.guide, x, num_steps=steps, num_chains=16, seed=seed, progress=False,
                step_size_jitter=args.jitter, **options,
            )  # fmt: skip
            estimates.append(r.log_px.double())
        a, b = estimates
        return (
            f"mean {float((a + b).mean() / 2):.3f}  spread {float((a - b).std() / 2**0.5):.3f}  "
            f"acceptance {r.acceptance.mean():.2f}  step {r.step_size.median():.3g}  "
            f"{(time.perf_counter() - start) / 2:.0f} s per seed"
        )

    for steps in map(int, args.steps.split(",")):
        print(f"AIS-{steps} adapted:     {run_twice(steps)}", flush=True)
        for eps in map(float, args.fixed.split(",")):
            print(
                f"AIS-{steps} fixed {eps:<6g}: {run_twice(steps, adapt_step_size=False, step_size=eps)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
