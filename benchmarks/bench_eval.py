"""Throughput of :func:`pyrovae.importance.log_likelihood` against Pyro and against the FLOP floor.

Model: the 784-400-50 binarized-MNIST VAE (softplus MLPs, Bernoulli likelihood), built with
:class:`pyrovae.VAE`; untrained unless ``--checkpoint`` gives a state dict. Data: the statically
binarized MNIST test set. Everything runs in one process with 2 torch threads:

1. images/s of ``log_likelihood`` with K importance samples on ``--images`` test images (after a
   warm-up);
2. images/s of Pyro's ``RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True,
   max_plate_nesting=1).loss`` called on one image at a time (it returns the negative IWAE-K
   bound; compared in time only);
3. the FLOP floor: matmul FLOPs per image (decoder 50-400-784 K times, encoder once) divided by
   the best dense fp32 matmul rate measured in the same run, at the decoder's shapes and 4096^3;
4. with ``--full``, wall time and peak resident memory (``ru_maxrss``) of a run over all 10,000
   test images.

The machine may be shared with other work. The images are therefore timed in segments of
``--segment`` images, each followed by Pyro on ``--pyro-per-segment`` of the same images and
preceded by the matmul timings, so that the figures compared were taken under the same
conditions. Reported: the best segment (the least disturbed) and the overall rate.

Run from the repository root::

    python benchmarks/bench_eval.py [--full] [--checkpoint PATH] [-K 5000]
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import pyro
import torch
from pyro.infer import RenyiELBO

import pyrovae
from pyrovae.importance import log_likelihood
from pyrovae.io import load_checkpoint

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist"
LATENT, HIDDEN, PIXELS = 50, 400, 784


def matmul_rate(shape_a: tuple[int, int], shape_b: tuple[int, int], repeats: int = 2) -> float:
    """Best rate, in FLOP/s, of ``A @ B`` over ``repeats`` timed calls after a warm-up."""
    a, b = torch.randn(shape_a), torch.randn(shape_b)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * shape_a[0] * shape_a[1] * shape_b[1] / best


def flops_per_image(num_samples: int) -> int:
    """Matmul FLOPs: decoder 50-400-784 per sample, encoder 784-400-(50, 50) once per image."""
    decoder = 2 * (LATENT * HIDDEN + HIDDEN * PIXELS)
    encoder = 2 * (PIXELS * HIDDEN + 2 * HIDDEN * LATENT)
    return num_samples * decoder + encoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-K", "--num-samples", type=int, default=5000)
    parser.add_argument("--images", type=int, default=100, help="images timed for log_likelihood")
    parser.add_argument("--segment", type=int, default=10, help="images per timed segment")
    parser.add_argument("--pyro-per-segment", type=int, default=1, help="images per segment for RenyiELBO")
    parser.add_argument("--checkpoint", help="pyrovae checkpoint or state dict of the VAE (else untrained)")
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--full", action="store_true", help="also run the whole 10,000-image test set")
    args = parser.parse_args()
    torch.set_num_threads(2)
    pyro.set_rng_seed(0)
    K = args.num_samples

    test = pyrovae.load("binarized-mnist", "test", root=args.data_root)
    x = test.batch(torch.arange(len(test))).reshape(len(test), PIXELS)
    vae = pyrovae.VAE(
        event_shape=(PIXELS,),
        latent_dim=LATENT,
        hidden=(HIDDEN,),
        activation="softplus",
        likelihood="bernoulli",
    )
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)  # a pyrovae checkpoint, or a bare state dict
        vae.load_state_dict(state.get("model", state))
    vae.eval()

    shapes = {
        f"({K}x{LATENT})@({LATENT}x{HIDDEN})": ((K, LATENT), (LATENT, HIDDEN)),
        f"({K}x{HIDDEN})@({HIDDEN}x{PIXELS})": ((K, HIDDEN), (HIDDEN, PIXELS)),
        "4096^3": ((4096, 4096), (4096, 4096)),
    }
    run = dict(num_samples=K, progress=False, seed=0)
    elbo = RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    log_likelihood(vae.model, vae.guide, x[:4], **run)  # warm-ups
    elbo.loss(vae.model, vae.guide, x[:1])

    rates = dict.fromkeys(shapes, 0.0)
    ours, pyros = [], []  # seconds per image, per segment
    ours_px, pyro_px = [], []  # estimates on the images Pyro also ran
    for lo in range(0, args.images, args.segment):
        for name, (a, b) in shapes.items():
            rates[name] = max(rates[name], matmul_rate(a, b))
        seg = x[lo : min(lo + args.segment, args.images)]
        start = time.perf_counter()
        result = log_likelihood(vae.model, vae.guide, seg, **run)
        ours.append((time.perf_counter() - start) / len(seg))
        n = min(args.pyro_per_segment, len(seg))
        start = time.perf_counter()
        pyro_px += [-elbo.loss(vae.model, vae.guide, seg[i : i + 1]) for i in range(n)]
        pyros.append((time.perf_counter() - start) / n)
        ours_px.append(result.log_px[:n])
    ours_t, pyro_t = torch.tensor(ours), torch.tensor(pyros)
    best_name = max(rates, key=rates.get)
    floor = rates[best_name] / flops_per_image(K)
    ours_best, pyro_best = 1 / float(ours_t.min()), 1 / float(pyro_t.min())
    ours_all, pyro_all = 1 / float(ours_t.mean()), 1 / float(pyro_t.mean())
    paired = float((pyro_t / ours_t).median())
    ours_px, pyro_px = torch.cat(ours_px), torch.tensor(pyro_px, dtype=torch.float64)

    print(f"binarized-MNIST test, 784-{HIDDEN}-{LATENT} softplus VAE, Bernoulli, K = {K}, torch threads = 2")
    for name, rate in rates.items():
        print(f"  matmul {name:>22}: {rate / 1e9:7.1f} GFLOP/s")
    print(f"  FLOP floor: {flops_per_image(K) / 1e9:.3f} GFLOP per image at the best rate ({best_name})")
    print(f"    = {floor:.1f} images/s")
    print(
        f"  log_likelihood ({args.images} images): "
        f"best segment {ours_best:.1f} images/s, overall {ours_all:.1f}"
    )
    print(
        f"  Pyro RenyiELBO.loss ({len(pyro_px)} images): "
        f"best {pyro_best:.1f} images/s, overall {pyro_all:.1f}"
    )
    print(
        f"  ratio ours / Pyro: {ours_best / pyro_best:.2f} best vs best, "
        f"{paired:.2f} median of pairs   (target >= 2)"
    )
    print(
        f"  fraction of FLOP floor: {ours_best / floor:.2f} best, "
        f"{ours_all / floor:.2f} overall   (target >= 0.60)"
    )
    print(
        f"  check, same images, independent draws: mean log p(x) ours {float(ours_px.mean()):.3f}, "
        f"Pyro {float(pyro_px.mean()):.3f}, max |diff| {float((ours_px - pyro_px).abs().max()):.3f} nats"
    )
    figures = {
        "num_samples": K,
        "ours_images_per_s_best": ours_best,
        "ours_images_per_s_overall": ours_all,
        "pyro_images_per_s_best": pyro_best,
        "pyro_images_per_s_overall": pyro_all,
        "ratio_paired_median": paired,
        "floor_images_per_s": floor,
        "best_matmul": best_name,
        "best_matmul_gflops": rates[best_name] / 1e9,
    }
    if args.full:
        start = time.perf_counter()
        full = log_likelihood(vae.model, vae.guide, x, **run)
        wall = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
        print(f"  full test set ({len(x)} images): {wall:.1f} s, {len(x) / wall:.1f} images/s")
        print(f"    peak resident memory of the process: {peak:.2f} GiB   (target < 2 GiB)")
        print("    " + full.summary().replace("\n", "\n    "))
        figures.update(
            full_wall_s=wall, full_images_per_s=len(x) / wall, full_peak_rss_gib=peak, full_nll=full.nll
        )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
