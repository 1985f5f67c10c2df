"""Wall time of :func:`pyrovae.ais` with adapted step sizes against a fixed step size.

With ``adapt_step_size=True`` (the default) a pilot of ``max(1, K/4)`` more chains per data point runs beside
the ``K`` chains and sets their step sizes (``pyrovae.infer.annealing``); with a fixed step size there is no
pilot. Both run the same number of annealing steps, chains and leapfrog steps, with the same step-size jitter,
so the ratio of their times is the price of the adaptation. In one process, on one device, timed in
interleaved rounds (the order alternating, so that a machine shared with other work disturbs both alike), on:

1. the linear-Gaussian model of ``examples/ais_bdmc.py`` (10-dimensional data, 3 latents, 20 data points;
   on the CPU): a model whose steps cost the fixed price of tracing it, as most models' do on a GPU;
2. the 784-400-50 binarized-MNIST VAE of :class:`pyrovae.VAE` (untrained: the cost of a step does not depend
   on the weights) on ``--images`` test images drawn at random, on ``--device``: on a CPU, a model whose
   arithmetic fills it.

Target: ratio adapted / fixed <= 1.05 where the steps cost the price of tracing the model (the pilot's chains
share the steps of the estimate's). On a CPU filled by the arithmetic the pilot's P/K = 1/4 more chains show
(about 1.25).

Run from the repository root::

    OMP_NUM_THREADS=1 python benchmarks/bench_ais.py [--device cpu|cuda] [--steps 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import pyrovae

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from toy_models import PPCA, offset_guide  # noqa: E402

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(name: str, model, guide, x, args, device) -> float:
    """Time adapted and fixed step sizes in interleaved rounds; print and return the ratio of their totals."""
    run = dict(num_steps=args.steps, num_chains=args.chains, leapfrog_steps=10, progress=False, device=device)
    settings = {"adapted": {}, "fixed": {"adapt_step_size": False, "step_size": 0.05}}
    for options in settings.values():  # warm-up
        pyrovae.ais(model, guide, x, **{**run, "num_steps": 3}, seed=0, **options)
    totals = dict.fromkeys(settings, 0.0)
    for i in range(args.rounds):
        for label in list(settings) if i % 2 == 0 else list(settings)[::-1]:
            sync(device)
            start = time.perf_counter()
            pyrovae.ais(model, guide, x, **run, seed=i, **settings[label])
            sync(device)
            totals[label] += time.perf_counter() - start
    ratio = totals["adapted"] / totals["fixed"]
    per_run = {k: v / args.rounds for k, v in totals.items()}
    print(
        f"{name}: AIS-{args.steps}, {args.chains} chains, {len(x)} data points: "
        f"adapted {per_run['adapted']:.2f} s, fixed {per_run['fixed']:.2f} s per run; "
        f"ratio adapted / fixed {ratio:.3f}",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--chains", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="timed runs of each, interleaved")
    parser.add_argument("--images", type=int, default=32, help="MNIST test images drawn at random")
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", help="also write the ratios to this JSON file")
    args = parser.parse_args()
    device = pyrovae.devices.resolve(args.device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    print(f"pyrovae {pyrovae.__version__}, torch {torch.__version__}, {name}")

    ppca = PPCA(data_dim=10, latent_dim=3)
    x = ppca.sample(20)
    cpu = torch.device("cpu")  # the toy model's parameters are CPU tensors
    ratios = {
        "linear-Gaussian": compare("linear-Gaussian (CPU)", ppca.model, offset_guide(ppca), x, args, cpu)
    }

    test = pyrovae.load("binarized-mnist", "test", root=args.data_root)
    (images,) = pyrovae.DataSource(test).sample(args.images, seed=0)
    torch.manual_seed(0)
    vae = pyrovae.VAE(event_shape=(784,), latent_dim=50, hidden=(400,)).to(device)
    ratios["784-400-50 VAE"] = compare(
        "784-400-50 VAE", vae.model, vae.guide, images.reshape(-1, 784), args, device
    )
    print("ratios adapted / fixed: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    print("target <= 1.05 where a step costs the price of tracing the model (see the docstring)")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "steps": args.steps, "ratios": ratios}))


if __name__ == "__main__":
    main()
