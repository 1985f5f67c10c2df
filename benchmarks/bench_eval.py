"""Speed of :func:`pyrovae.log_likelihood` against a hand-written batched estimator and Pyro.

Model (``--model``): the 784-400-50 binarized-MNIST VAE (softplus MLPs, Bernoulli likelihood) of
:class:`pyrovae.VAE`, or ``gated``, the VampPrior paper's ``vae-standard`` (gated 784-300-300-40 networks);
untrained unless ``--checkpoint`` gives a state dict. Data: statically
binarized MNIST test images drawn at random (the test file is ordered by class). In one process,
on one device, with the same K importance samples per image:

1. ``pyrovae.log_likelihood`` (estimates, standard errors, ESS and PSIS k-hat per image);
2. a hand-written batched torch importance-sampling estimator of the same model (``hand_estimates``:
   the VAE's own encoder and decoder, about twenty lines), one image of K particles per call (with
   ``--same-chunks``, drawn in particle chunks of the size pyrovae's sweep takes on the device, so that
   neither side's allocator thrashes: the issue's "measure both sides in chunks of the same size"), the
   estimate only;
3. Pyro's ``RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True).loss`` on one image at a
   time (the negative IWAE-K bound; compared in time only).

The three are timed in interleaved segments of ``--segment`` images (Pyro on ``--pyro-per-segment``
of them), pyrovae and the hand-written estimator in alternating order, so that a machine shared
with other work disturbs all alike; reported are the ratios of the summed times, the target being
pyrovae >= 0.95x the hand-written estimator and >= 1.0x Pyro. On the CPU the page faults per image
are reported too: the estimators allocate temporaries of tens of MiB per image, and whether the C
library's allocator hands them back to the system between images (and takes fresh, faulting pages
for the next) varies from run to run; it moves the ratio by several percent either way.
``--full`` adds the whole 10,000-image test set: wall time and the process's peak memory (resident
on the CPU, allocated on a GPU; target < 2 GiB on the CPU).

Run from the repository root::

    python benchmarks/bench_eval.py [--device cpu|cuda] [--full] [--checkpoint PATH] [-K 5000] [--compile off]

``--precision`` (``highest``, ``tf32`` or ``bf16``; :mod:`pyrovae.precision`) applies to both estimators.
``--compile`` is :func:`pyrovae.log_likelihood`'s: ``auto`` records and replays the chunks' log-weights on a
GPU (:mod:`pyrovae.graphs`) and traces each on a CPU, ``off`` traces each everywhere.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import resource
import time
from pathlib import Path

import pyro
import torch
import torch.nn.functional as F
from pyro.infer import RenyiELBO

import pyrovae
from pyrovae.infer.importance import LogWeights
from pyrovae.precision import using_precision
from pyrovae.runs.run import RunConfig
from pyrovae.storage import load_checkpoint

DATA_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist"
LATENT, HIDDEN, PIXELS = 50, 400, 784


def build(model: str) -> pyrovae.VAE:
    """The untrained VAE ``model``: ``mnist``, 784-400-50 softplus MLPs; ``gated``, the VampPrior paper's
    ``vae-standard`` (gated 784-300-300-40 networks, as ``examples/reproduce.py`` builds it)."""
    if model == "mnist":
        return pyrovae.VAE(event_shape=(PIXELS,), latent_dim=LATENT, hidden=(HIDDEN,))
    config = RunConfig(likelihood="bernoulli", network="gated", latent_dim=40, hidden=[300, 300])
    return config.build_vae((PIXELS,))


@torch.no_grad()
def hand_estimates(
    vae: pyrovae.VAE, x: torch.Tensor, num_samples: int, chunk: int | None = None
) -> torch.Tensor:
    """IWAE-K estimates of log p(x) for the images ``x`` (B, 784), one image at a time, its K particles drawn
    ``chunk`` at a time (all at once by default)."""
    out = []
    for image in x:
        loc, scale = vae.encoder(image)
        latent = loc.shape[-1]
        log_w, step = [], chunk or num_samples
        for lo in range(0, num_samples, step):
            z = loc + scale * torch.randn(min(step, num_samples - lo), latent, device=x.device)
            logits = vae.decoder(z)
            log_lik = -F.binary_cross_entropy_with_logits(
                logits, image.expand_as(logits), reduction="none"
            ).sum(-1)
            log_prior = -0.5 * z.square().sum(-1) - 0.5 * latent * math.log(2 * math.pi)
            eps = (z - loc) / scale
            log_q = -0.5 * eps.square().sum(-1) - scale.log().sum(-1) - 0.5 * latent * math.log(2 * math.pi)
            log_w.append(log_lik + log_prior - log_q)
        out.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(num_samples))
    return torch.stack(out).cpu()


def at_precision(fn, precision: str, device: torch.device):
    """``fn`` run at ``precision`` (:func:`pyrovae.precision.using_precision`), as pyrovae's chunks run."""

    def run(*args):
        with using_precision(precision, device):
            return fn(*args)

    return run


def page_faults() -> int:
    """Minor page faults of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device, fn, *args):
    sync(device)
    start = time.perf_counter()
    value = fn(*args)
    sync(device)
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-K", "--num-samples", type=int, default=5000)
    parser.add_argument("--images", type=int, default=100, help="images timed")
    parser.add_argument("--segment", type=int, default=10, help="images per timed segment")
    parser.add_argument("--pyro-per-segment", type=int, default=1, help="images per segment for RenyiELBO")
    parser.add_argument("--checkpoint", help="pyrovae checkpoint or state dict of the VAE (else untrained)")
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on the CPU")
    parser.add_argument("--full", action="store_true", help="also run the whole 10,000-image test set")
    parser.add_argument("--compile", default="auto", help="pyrovae's: auto, graph, inductor or off")
    parser.add_argument("--precision", default="highest", help="highest, tf32 or bf16, for both estimators")
    parser.add_argument(
        "--model", choices=("mnist", "gated"), default="mnist", help="the VAE (module docstring)"
    )
    parser.add_argument(
        "--same-chunks",
        action="store_true",
        help="the hand-written estimator draws each image's particles in chunks of pyrovae's size",
    )
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pyro.set_rng_seed(0)
    device = pyrovae.devices.resolve(args.device)
    K = args.num_samples

    test = pyrovae.load("binarized-mnist", "test", root=args.data_root)
    x_all = test.batch(torch.arange(len(test))).reshape(len(test), PIXELS)
    x = x_all[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.images]].to(device)
    vae = build(args.model)
    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)  # a pyrovae checkpoint, or a bare state dict
        vae.load_state_dict(state.get("model", state))
    vae.to(device).eval()

    run = dict(num_samples=K, progress=False, seed=0, compile=args.compile, precision=args.precision)
    # with --same-chunks, the particle chunks pyrovae's sweep takes on this device (LogWeights' sizes)
    chunk = LogWeights(vae.model, vae.guide, x[:1], K).particle_batch_size if args.same_chunks else None
    hand_log_px = at_precision(functools.partial(hand_estimates, chunk=chunk), args.precision, device)

    def evaluate(images):
        return pyrovae.log_likelihood(vae.model, vae.guide, images, **run)

    elbo = RenyiELBO(alpha=0, num_particles=K, vectorize_particles=True, max_plate_nesting=1)
    evaluate(x[:2])  # warm-ups
    hand_log_px(vae, x[:2], K)
    elbo.loss(vae.model, vae.guide, x[:1])

    t_ours = t_hand = t_pyro = 0.0
    faults = {"ours": 0, "hand": 0}
    ours_px, hand_px, pyro_px = [], [], []
    for i, lo in enumerate(range(0, args.images, args.segment)):
        seg = x[lo : lo + args.segment]
        for which in ("hand", "ours") if i % 2 == 0 else ("ours", "hand"):
            before = page_faults()
            if which == "hand":
                dt, hand = timed(device, hand_log_px, vae, seg, K)
                t_hand += dt
                hand_px.append(hand)
            else:
                dt, result = timed(device, evaluate, seg)
                t_ours += dt
                ours_px.append(result.log_px)
            faults[which] += page_faults() - before
        one = seg[: min(args.pyro_per_segment, len(seg))]
        dt, values = timed(
            device, lambda s: [-elbo.loss(vae.model, vae.guide, s[i : i + 1]) for i in range(len(s))], one
        )
        t_pyro += dt
        pyro_px += values
    n_pyro = len(pyro_px)
    ours_rate, hand_rate, pyro_rate = args.images / t_ours, args.images / t_hand, n_pyro / t_pyro
    ours_px, hand_px = torch.cat(ours_px), torch.cat(hand_px).double()
    name = (
        torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} torch threads"
    )
    model = {"mnist": f"784-{HIDDEN}-{LATENT} softplus", "gated": "gated 784-300-300-40"}[args.model]
    print(f"binarized-MNIST test, {model} VAE, Bernoulli, K = {K}, {name}, precision {args.precision}")
    print(f"  pyrovae.log_likelihood ({args.images} images): {ours_rate:.2f} images/s")
    print(f"  hand-written batched estimator ({args.images} images): {hand_rate:.2f} images/s")
    print(f"  Pyro RenyiELBO.loss ({n_pyro} images): {pyro_rate:.2f} images/s")
    if device.type == "cpu":
        print(
            f"  page faults per image: pyrovae {faults['ours'] / args.images:.0f}, "
            f"hand-written {faults['hand'] / args.images:.0f}"
        )
    print(f"  ratio pyrovae / hand-written: {ours_rate / hand_rate:.3f}   (target >= 0.95)")
    if chunk is not None:
        per_image = f"{1e3 / ours_rate:.1f} against {1e3 / hand_rate:.1f} ms per image"
        ratio = f"{hand_rate / ours_rate:.3f} ({per_image}; target <= 1.05)"
        print(f"  time pyrovae / hand-written, both in chunks of {chunk} particles: {ratio}")
    print(f"  ratio pyrovae / Pyro: {ours_rate / pyro_rate:.3f}   (target >= 1.0)")
    print(
        f"  check, same images, independent draws: mean log p(x) pyrovae {float(ours_px.mean()):.3f}, "
        f"hand-written {float(hand_px.mean()):.3f}, Pyro {sum(pyro_px) / n_pyro:.3f} (on {n_pyro})"
    )
    figures = {
        "device": str(device),
        "num_samples": K,
        "ours_images_per_s": ours_rate,
        "hand_images_per_s": hand_rate,
        "pyro_images_per_s": pyro_rate,
        "ratio_hand": ours_rate / hand_rate,
        "ratio_pyro": ours_rate / pyro_rate,
        "page_faults_per_image": {k: v / args.images for k, v in faults.items()},
    }
    if args.full:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        wall, full = timed(
            device, lambda: pyrovae.log_likelihood(vae.model, vae.guide, x_all.to(device), **run)
        )
        if device.type == "cuda":
            peak, what = torch.cuda.max_memory_allocated(device) / 2**30, "peak GPU memory allocated"
        else:
            peak, what = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "peak resident memory"
        print(f"  full test set ({len(x_all)} images): {wall:.1f} s, {len(x_all) / wall:.1f} images/s")
        print(f"    {what}: {peak:.2f} GiB   (target < 2 GiB on the CPU)")
        print("    " + full.summary().replace("\n", "\n    "))
        figures.update(
            full_wall_s=wall, full_images_per_s=len(x_all) / wall, full_peak_gib=peak, full_nll=full.nll
        )
    figures.update(compile=args.compile, precision=args.precision, model=args.model, hand_chunk=chunk)
    print(json.dumps(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
