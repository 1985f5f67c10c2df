"""Time one training step of pyrovae.fit's loop against a hand-written PyTorch VAE.

Both train the same 784-400-50 softplus MLP VAE (Bernoulli likelihood, single-sample Monte
Carlo ELBO, Adam 1e-3) on the same minibatches of 100 statically binarized MNIST images, in
one process. Rounds of the two are interleaved and the median per-step time of each is taken,
so that load from other processes affects both alike. Prints the ratio (target: <= 1.25).

    python benchmarks/bench_train.py [--data-root ../shared/data/binarized_mnist] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

import pyrovae


class HandVAE(nn.Module):
    """The same architecture and loss as pyrovae.VAE's default, written directly in PyTorch."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(784, 400)
        self.loc = nn.Linear(400, 50)
        self.log_scale = nn.Linear(400, 50)
        self.dec1 = nn.Linear(50, 400)
        self.dec2 = nn.Linear(400, 784)

    def loss(self, x: torch.Tensor, num_data: int) -> torch.Tensor:
        x = x.flatten(1)
        h = F.softplus(self.enc(x))
        loc, scale = self.loc(h), self.log_scale(h).exp()
        z = loc + scale * torch.randn_like(loc)
        logits = self.dec2(F.softplus(self.dec1(z)))
        log_px = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_qz = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)
        return -(log_px + log_pz - log_qz).sum() * (num_data / x.shape[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "binarized_mnist"
    parser.add_argument("--data-root", default=str(root))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=40, help="steps per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epoch", action="store_true", help="also time one epoch (all 500 batches) of each")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    device = pyrovae.devices.resolve(args.device)

    data = pyrovae.load("binarized-mnist", "train", root=args.data_root)
    n = len(data)
    steps = n // 100 if args.epoch else args.steps
    batches = [data.batch(torch.arange(i, i + 100)).to(device) for i in range(0, 100 * steps, 100)]

    vae = pyrovae.VAE(event_shape=(1, 28, 28), latent_dim=50, hidden=(400,))
    trainer = pyrovae.Trainer(vae, n, device=device)
    hand = HandVAE().to(device)
    opt = torch.optim.Adam(hand.parameters(), lr=1e-3)

    def hand_step(x):
        loss = hand.loss(x, n)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item() / n

    def timed(step, batches=batches[: args.steps]) -> float:
        start = time.perf_counter()
        for x in batches:
            step(x)
        return (time.perf_counter() - start) / len(batches)

    timed(hand_step), timed(trainer.step)  # warm-up
    ours, base = [], []
    for _ in range(args.rounds):
        base.append(timed(hand_step))
        ours.append(timed(trainer.step))
    t_ours, t_base = statistics.median(ours), statistics.median(base)
    print(f"device: {device}")
    print(f"hand-written PyTorch step: {t_base * 1e3:.2f} ms (median of {args.rounds} rounds)")
    print(f"pyrovae.fit step (Trace_ELBO): {t_ours * 1e3:.2f} ms")
    print(f"ratio pyrovae / hand-written: {t_ours / t_base:.3f} (target <= 1.20 on the CPU, <= 1.5 on a GPU)")
    if args.epoch:
        e_base, e_ours = timed(hand_step, batches), timed(trainer.step, batches)
        print(
            f"one epoch of {len(batches)} steps: hand-written {e_base * len(batches):.2f} s, "
            f"pyrovae {e_ours * len(batches):.2f} s, ratio {e_ours / e_base:.3f}"
        )


if __name__ == "__main__":
    main()
