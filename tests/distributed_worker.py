"""The worker of tests/test_distributed.py, launched by ``torchrun --nproc_per_node 2``; the test
computes the one-process references with the same functions, in its own process.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py OUT

Rank 0 saves what each function returns into ``OUT/NAME.pt``; the CLI runs write into ``OUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

import pyrovae
from pyrovae import cli, distributed
from pyrovae.estimators import ESTIMATORS

#: 61 data points: a global batch of 25 leaves a last batch of 11, shared 6 + 5 by two workers
NUM_DATA, BATCH, DIM = 61, 25, 12
ESTIMATOR_SPECS = [*ESTIMATORS, "iwae:k=3:beta=0.5"]
GRADIENT_DRAWS = 100
# a small `pyrovae train` and `evaluate` on the bundled digits
TRAIN = [
    *("train", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--batch-size", "400"),
    *("--no-progress", "--test-samples", "0", "--backend", "gloo"),
]
EVALUATE = [
    *("--limit", "24", "--num-samples", "20", "--bounds", "1,5", "--no-progress", "--max-memory", "0.01")
]


class MAPVAE(pyrovae.VAE):
    """A VAE whose guide is the point mass at the encoder's mean: an amortized MAP autoencoder.

    The guide draws nothing, so every estimator's loss is the deterministic
    :math:`-\\log p(x, z = \\mu_\\phi(x))`, and a distributed run can be compared with one process
    to floating-point rounding.
    """

    def guide(self, x=None, *, batch_size=None):
        n = self._plate_size(x, batch_size)
        with pyro.plate("data", n):
            loc, _ = self.encoder(x)
            return pyro.sample("z", dist.Delta(loc).to_event(1))


def data() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((NUM_DATA, DIM), 0.3, dtype=torch.float64), generator=g)


def vae(kind=pyrovae.VAE) -> pyrovae.VAE:
    pyro.set_rng_seed(0)
    return kind(DIM, latent_dim=2, hidden=(8,)).double()


def train_estimators() -> dict[str, dict[str, torch.Tensor]]:
    """The MAP autoencoder's parameters after one epoch (3 steps) of each estimator."""
    out = {}
    for spec in ESTIMATOR_SPECS:
        train = pyrovae.VAEDataset(data())  # kept in float64 (a tensor would be cast to float32)
        result = pyrovae.fit(vae(MAPVAE), train, estimator=spec, epochs=1, batch_size=BATCH, progress=False)
        out[spec] = {k: v.clone() for k, v in result.vae.state_dict().items()}
        out[spec]["train_loss"] = torch.tensor(result.history["train_loss"].to_numpy())
    return out


def gradient_draws() -> torch.Tensor:
    """``GRADIENT_DRAWS`` draws of the ELBO gradient of the sampled VAE at its initial parameters,
    on the whole data set as one global batch: rows of the flattened gradient."""
    model, x = vae(), data()
    # SGD with step size 1: the step is minus the gradient
    trainer = pyrovae.Trainer(model, NUM_DATA, optimizer="sgd", lr=1.0)
    lo, hi = distributed.shard(NUM_DATA)
    start = [p.detach().clone() for p in trainer.params]
    rows = []
    for draw in range(GRADIENT_DRAWS):
        pyro.set_rng_seed(distributed.derived_seed(distributed.world_size(), draw, distributed.rank()))
        trainer.step(x[lo:hi], batch_size=NUM_DATA)
        with torch.no_grad():
            rows.append(torch.cat([(p0 - p).flatten() for p0, p in zip(start, trainer.params, strict=True)]))
            for p0, p in zip(start, trainer.params, strict=True):
                p.copy_(p0)
    return torch.stack(rows)


def evaluations() -> dict[str, torch.Tensor]:
    """Per-datapoint ``log_likelihood`` (with log-weights), ``bounds`` and ``ais`` of the sampled VAE."""
    model, x = vae(), data()
    ll = pyrovae.log_likelihood(
        model.model, model.guide, x, 50, batch_size=4, seed=3, progress=False, return_log_weights=True
    )
    ladder = pyrovae.bounds(model.model, model.guide, x, ks=(1, 5, 50), batch_size=7, seed=4, progress=False)
    annealed = pyrovae.ais(
        model.model,
        model.guide,
        x,
        num_steps=3,
        num_chains=4,
        leapfrog_steps=2,
        batch_size=5,
        seed=5,
        progress=False,
    )
    out = {name: getattr(ll, name) for name in ("log_px", "log_px_se", "ess", "khat", "log_weights")}
    out.update({f"bound {name}": values for name, values in ladder.values.items()})
    out.update({f"ais {name}": getattr(annealed, name) for name in ("log_px", "acceptance", "log_weights")})
    return out


def cli_runs(out: Path) -> None:
    """``pyrovae train`` for 2 epochs; for 1 epoch then ``--resume`` to 2; ``pyrovae evaluate``."""
    for argv in (
        [*TRAIN, "--epochs", "2", "--run-dir", str(out / "straight")],
        [*TRAIN, "--epochs", "1", "--run-dir", str(out / "resumed")],
        [*TRAIN, "--epochs", "2", "--run-dir", str(out / "resumed"), "--resume"],
        ["evaluate", str(out / "straight"), *EVALUATE],
    ):
        status = cli.main(argv)
        if status:
            raise SystemExit(status)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    distributed.init("gloo", timeout=120)
    results = {
        "world_size": torch.tensor(distributed.world_size()),
        "estimators": train_estimators(),
        "gradients": gradient_draws(),
        "evaluations": evaluations(),
    }
    if distributed.is_main():
        torch.save(results, out / "results.pt")
    cli_runs(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
