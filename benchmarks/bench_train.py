"""Time pyrovae's training step against the same step written by hand in PyTorch, eager and captured.

Models (``--model``), each trained with a single-sample Monte Carlo ELBO (Bernoulli likelihood, standard
normal prior, softplus MLPs) and Adam 1e-3 on minibatches of 100:

- ``mnist``: the 784-400-50 VAE of :class:`pyrovae.VAE` on statically binarized MNIST (``--data-root``);
- ``tiny``: a VAE with 2 latents and 16 hidden units on scikit-learn's 8x8 digits, whose step is almost all
  per-step overhead: Python, the effect handlers, one kernel launch per operation.

In one process, on one device, the same minibatches go through

1. ``hand``: the hand-written step, eager (the VAE's loss in a dozen lines of torch, ``backward``, Adam);
2. ``hand captured``: that step captured: on CUDA as one CUDA graph (forward, backward and a capturable Adam,
   static input buffer), elsewhere compiled by ``torch.compile``;
3. ``pyrovae``: :class:`pyrovae.Trainer`'s step with ``--compile`` (default ``auto``: after the first step the
   loss and gradient are captured and replayed, see :mod:`pyrovae.train.capture`), checked at once on the CPU
   and every 100 steps on a GPU, as :func:`pyrovae.fit` does.

All three run at ``--precision`` (:mod:`pyrovae.precision`; default ``highest``).

Rounds of ``--steps`` steps of each are interleaved (one round each in turn, the order alternating) and the
median per-step time of each is taken, so that load from other processes affects all alike. ``--epoch`` also
times one epoch (all 500 minibatches of MNIST's 50,000 training images) of each. Targets (issue 29): on the
CPU, pyrovae's step of ``tiny`` <= 1.4x ``hand`` and a ``mnist`` epoch <= 1.15x ``hand``; on a GPU, a
``mnist`` epoch <= 0.5 s and <= 1.3x ``hand captured``.

    python benchmarks/bench_train.py [--model mnist|tiny] [--device cpu|cuda] [--compile auto] [--epoch]
        [--precision highest|tf32|bf16]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import pyrovae
from pyrovae.precision import using_precision
from pyrovae.train.capture import CPU_EAGER_STEPS

DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binarized_mnist"
#: model: (data set, event shape, latents, hidden units)
MODELS = {"mnist": ("binarized-mnist", (1, 28, 28), 50, 400), "tiny": ("digits", (1, 8, 8), 2, 16)}
# steps between the checks of pyrovae's step on a GPU, as fit's loop (pyrovae.train.loop.SYNC_EVERY)
SYNC_EVERY = 100


class HandVAE(nn.Module):
    """The same architecture and loss as pyrovae.VAE's default, written directly in PyTorch."""

    def __init__(self, pixels: int, latents: int, hidden: int):
        super().__init__()
        self.enc = nn.Linear(pixels, hidden)
        self.loc = nn.Linear(hidden, latents)
        self.log_scale = nn.Linear(hidden, latents)
        self.dec1 = nn.Linear(latents, hidden)
        self.dec2 = nn.Linear(hidden, pixels)

    def loss(self, x: torch.Tensor, num_data: int) -> torch.Tensor:
        x = x.flatten(1)
        h = F.softplus(self.enc(x))
        loc, scale = self.loc(h), self.log_scale(h).exp()
        z = loc + scale * torch.randn_like(loc)
        logits = self.dec2(F.softplus(self.dec1(z)))
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        log_pz = -0.5 * (z.square() + torch.log(torch.tensor(2 * torch.pi))).sum(-1)
        log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        return -(log_px + log_pz - log_qz).sum() * (num_data / x.shape[0])


def hand_eager(hand: HandVAE, num_data: int):
    opt = torch.optim.Adam(hand.parameters(), lr=1e-3)

    def step(x: torch.Tensor) -> torch.Tensor:
        loss = hand.loss(x, num_data)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def hand_captured(hand: HandVAE, num_data: int, example: torch.Tensor):
    """The hand-written step as one CUDA graph on CUDA, else its loss compiled by torch.compile."""
    if example.device.type != "cuda":
        opt = torch.optim.Adam(hand.parameters(), lr=1e-3)
        loss_fn = torch.compile(hand.loss)

        def compiled(x: torch.Tensor) -> torch.Tensor:
            loss = loss_fn(x, num_data)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        return compiled
    opt = torch.optim.Adam(hand.parameters(), lr=1e-3, capturable=True)
    static_x = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(
            3
        ):  # warm-up, as torch's documentation of CUDA graphs asks (it also builds Adam's state)
            opt.zero_grad(set_to_none=True)
            hand.loss(static_x, num_data).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = hand.loss(static_x, num_data)
        static_loss.backward()
        opt.step()

    def replay(x: torch.Tensor) -> torch.Tensor:
        static_x.copy_(x)
        graph.replay()
        return static_loss

    return replay


def pyrovae_step(trainer: pyrovae.Trainer):
    """Trainer.step as fit runs it: checked at once on the CPU, every SYNC_EVERY steps on a GPU."""
    deferred = trainer.device.type == "cuda"
    count = 0

    def step(x: torch.Tensor):
        nonlocal count
        loss = trainer.step(x, sync=not deferred)
        count += 1
        if deferred and count % SYNC_EVERY == 0:
            assert trainer.check() is None
        return loss

    return step


def at_precision(step, precision: str):
    """``step`` run at ``precision`` (:func:`pyrovae.precision.using_precision`), as pyrovae's step runs."""

    def run(x: torch.Tensor):
        with using_precision(precision, x.device):
            return step(x)

    return run


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, batches, device: torch.device) -> float:
    """Seconds per step over ``batches``, the device's queue drained before and after."""
    sync(device)
    start = time.perf_counter()
    for x in batches:
        step(x)
    sync(device)
    return (time.perf_counter() - start) / len(batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mnist")
    parser.add_argument("--data-root", default=str(DATA_ROOT))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", default="auto", help="pyrovae's: auto, graph, inductor or off")
    parser.add_argument("--precision", default="highest", help="highest, tf32 or bf16, for every contender")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument("--epoch", action="store_true", help="also time one epoch (all 500 batches) of each")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = pyrovae.devices.resolve(args.device)
    name, event_shape, latents, hidden = MODELS[args.model]

    data = pyrovae.load(name, "train", **({"root": args.data_root} if name == "binarized-mnist" else {}))
    n = len(data)
    steps = n // 100 if args.epoch else args.steps
    batches = [data.batch(torch.arange(i, i + 100) % n).to(device) for i in range(0, 100 * steps, 100)]

    vae = pyrovae.VAE(event_shape=event_shape, latent_dim=latents, hidden=(hidden,))
    pixels = int(torch.tensor(event_shape).prod())
    # the hand-written steps at the same precision as pyrovae's (recorded under it, on a GPU)
    with using_precision(args.precision, device):
        contenders = {
            "hand": at_precision(hand_eager(HandVAE(pixels, latents, hidden).to(device), n), args.precision),
            "hand captured": at_precision(
                hand_captured(HandVAE(pixels, latents, hidden).to(device), n, batches[0]), args.precision
            ),
            f"pyrovae (compile={args.compile})": pyrovae_step(
                pyrovae.Trainer(vae, n, device=device, compile=args.compile, precision=args.precision)
            ),
        }
    for step in contenders.values():  # warm-up: first steps, recordings (after CPU_EAGER_STEPS), compilation
        timed(step, (batches * (CPU_EAGER_STEPS // len(batches) + 1))[: CPU_EAGER_STEPS + 3], device)
    times = {label: [] for label in contenders}
    for i in range(args.rounds):
        for label in list(contenders) if i % 2 == 0 else list(contenders)[::-1]:
            times[label].append(timed(contenders[label], batches[: args.steps], device))
    median = {label: statistics.median(t) for label, t in times.items()}
    ours = list(contenders)[-1]
    print(
        f"device: {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"model {args.model}, {args.threads} CPU thread(s)"
    )
    for label, t in median.items():
        print(f"{label:>28}: {t * 1e3:8.3f} ms per step (median of {args.rounds} rounds of {args.steps})")
    print(
        f"ratio pyrovae / hand: {median[ours] / median['hand']:.3f}; "
        f"pyrovae / hand captured: {median[ours] / median['hand captured']:.3f}"
    )
    figures = {
        "device": str(device),
        "model": args.model,
        "compile": args.compile,
        "precision": args.precision,
        "step_ms": {label: t * 1e3 for label, t in median.items()},
        "ratio_hand": median[ours] / median["hand"],
        "ratio_hand_captured": median[ours] / median["hand captured"],
    }
    if args.epoch:
        epoch = {label: timed(step, batches, device) * len(batches) for label, step in contenders.items()}
        figures.update(epoch_s=epoch, epoch_ratio_hand=epoch[ours] / epoch["hand"])
        figures["epoch_ratio_hand_captured"] = epoch[ours] / epoch["hand captured"]
        print(
            f"one epoch of {len(batches)} steps: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in epoch.items())
            + f"; ratio pyrovae / hand {epoch[ours] / epoch['hand']:.3f}, "
            f"pyrovae / hand captured {epoch[ours] / epoch['hand captured']:.3f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
