"""The worker of tests/test_distributed.py, launched by ``torchrun --nproc_per_node 2``; the test
computes the one-process references with the same functions, in its own process.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/distributed_worker.py OUT

Rank 0 saves what each function returns into ``OUT/NAME.pt``; the CLI runs write into ``OUT``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

import pyrovae
from pyrovae import cli, distributed
from pyrovae.analysis import latent_space
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

LATENTS = ["--limit", "5", "--num-particles", "3", "--no-progress", "--seed", "1"]
#: the validation bound at which StopAtTarget stops the MAP autoencoder: between its 2nd epoch's (10.341)
#: and its 3rd's (10.295), so that it stops after epoch 3
TARGET = 10.32


class StopAtTarget(pyrovae.Callback):
    """The example callback of pyrovae.train.callbacks (stops once the validation bound reaches a target),
    recording the hooks it was called with."""

    def __init__(self, target: float):
        self.target = target
        self.calls = []

    def on_fit_start(self, state):
        self.calls.append("start")

    def on_epoch_end(self, state, row):
        self.calls.append(row["epoch"])
        if row["valid_loss"] <= self.target:
            state.stop(f"the validation bound reached {self.target}")

    def on_fit_end(self, state, result):
        self.calls.append("end")


def stopped_by_callback(callback: pyrovae.Callback | None) -> pyrovae.FitResult:
    """The MAP autoencoder trained for at most 6 epochs with ``callback`` (if any)."""
    train = pyrovae.VAEDataset(data())
    given = [callback] if callback is not None else None
    return pyrovae.fit(vae(MAPVAE), train, train, epochs=6, batch_size=BATCH, progress=False, callbacks=given)


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


def evaluations(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every public function that sweeps a data set, called in sequence on ``x``: their
    per-datapoint values (``x`` of one data point leaves the second rank without a shard)."""
    model = vae()
    pair = (model.model, model.guide)
    ll = pyrovae.log_likelihood(*pair, x, 50, batch_size=4, seed=3, progress=False, return_log_weights=True)
    ladder = pyrovae.bounds(*pair, x, ks=(1, 5, 50), batch_size=7, seed=4, progress=False)
    annealing = dict(num_steps=3, num_chains=4, leapfrog_steps=2, progress=False)
    annealed = pyrovae.ais(*pair, x, batch_size=5, seed=5, **annealing)
    sandwich = pyrovae.bdmc(*pair, 3, batch_size=2, seed=6, **annealing)
    stats = pyrovae.latent_stats(*pair, x, 3, seed=7, progress=False)
    out = {name: getattr(ll, name) for name in ("log_px", "log_px_se", "ess", "khat", "log_weights")}
    out.update({f"bound {name}": values for name, values in ladder.values.items()})
    out.update({f"ais {name}": getattr(annealed, name) for name in ("log_px", "acceptance", "log_weights")})
    out.update({f"bdmc {name}": getattr(sandwich, name).log_px for name in ("forward", "reverse")})
    out.update(
        {"latents reconstruction": stats.reconstruction, "latents kl": stats.kl},
        **{
            f"latents {k}": torch.as_tensor(v.to_numpy(float))
            for k, v in stats.sites.select_dtypes("number").items()
        },
    )
    background = vae(MAPVAE)
    options = dict(num_samples=5, seed=8, steps=2, batch_size=3, progress=False)
    for method, extra in (
        ("nll", {}),
        ("elbo", {}),
        ("reconstruction", {}),
        ("likelihood-regret", {}),
        ("likelihood-ratio", {"background": (background.model, background.guide)}),
        ("typicality", {"reference": x}),
    ):
        scores = pyrovae.anomaly_scores(*pair, x, method, **options, **extra)
        out[f"anomaly {method}"] = scores.score
    out.update({f"encode {k}": v for k, v in latent_space.encode(pair, x, batch_size=3, seed=9).items()})
    out["decode"] = latent_space.decode(pair, latent_space.encode(pair, x, batch_size=3), x)
    out["validation"] = torch.tensor(pyrovae.Trainer(model, len(x)).evaluate(x, seed=10, chunk_size=4))
    return out


def failure(out: Path) -> None:
    """``log_likelihood`` on data with a value outside the model's support in the second rank's
    shard: each rank writes the error it raised to ``OUT/failure-RANK.txt``."""
    x = data().clone()
    x[50, 0] = 2.0  # a Bernoulli observation of 2
    model = vae()
    try:
        pyrovae.log_likelihood(model.model, model.guide, x, 5, batch_size=4, seed=3, progress=False)
        message = "no error"
    except Exception as e:
        message = f"{type(e).__name__}: {e}"
    (out / f"failure-{distributed.rank()}.txt").write_text(message)


class Failing(pyrovae.Callback):
    """A callback whose on_epoch_end raises at the given epoch."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, state, row):
        if row["epoch"] == self.epoch:
            raise ValueError(f"a bug in a callback at epoch {self.epoch}")


def callbacks(out: Path) -> None:
    """Training stopped by :class:`StopAtTarget`, given to every rank, then to rank 0 alone: each rank
    writes its epochs and its callback's calls into ``OUT/callbacks-RANK.json``; then a callback of rank 0
    alone that raises, each rank writing the error it raised into ``OUT/callback-error-RANK.txt``."""
    records = []
    for everywhere in (True, False):
        callback = StopAtTarget(TARGET)
        result = stopped_by_callback(callback if everywhere or distributed.is_main() else None)
        records.append(
            {"epochs": len(result.history), "stop_reason": result.stop_reason, "calls": callback.calls}
        )
    (out / f"callbacks-{distributed.rank()}.json").write_text(json.dumps(records))
    try:
        stopped_by_callback(Failing(2) if distributed.is_main() else None)
        message = "no error"
    except Exception as e:
        message = f"{type(e).__name__}: {e}"
    (out / f"callback-error-{distributed.rank()}.txt").write_text(message)


def cli_runs(out: Path) -> None:
    """``pyrovae train`` for 2 epochs; for 1 epoch then ``--resume`` to 2; ``pyrovae evaluate``."""
    for argv in (
        [*TRAIN, "--epochs", "2", "--run-dir", str(out / "straight")],
        [*TRAIN, "--epochs", "1", "--run-dir", str(out / "resumed")],
        [*TRAIN, "--epochs", "2", "--run-dir", str(out / "resumed"), "--resume"],
        ["evaluate", str(out / "straight"), *EVALUATE],
        ["latents", str(out / "straight"), *LATENTS],
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
        "evaluations": evaluations(data()),
        "one data point": evaluations(data()[:1]),
    }
    failure(out)
    callbacks(out)
    if distributed.is_main():
        torch.save(results, out / "results.pt")
    cli_runs(out)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
