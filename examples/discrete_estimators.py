"""Estimators on discrete latents: a sigmoid belief network trained with VIMCO, RWS and TraceGraph.

The SBN of the VIMCO, RWS and NVIL papers (:class:`pyrovae.SBN`: ``--latent-sizes`` Bernoulli
units per layer, linear-logistic layers, linear recognition network) on statically binarized
MNIST, trained from the same initial parameters with each estimator at the same budget: the same
epochs of the same batches, and the same number of latent draws per data point and step
(``--particles``: ``vimco:k=K``, ``rws:k=K`` and ``tracegraph`` with K vectorized particles and
NVIL's input-dependent baseline). Then, for each trained model:

- test NLL by importance sampling with ``--eval-samples`` draws per image on all 10,000 test images
  (or ``--eval-limit`` drawn at random), with ESS and PSIS k-hat;
- the gradient signal-to-noise ratio of every estimator at that model's parameters
  (:func:`pyrovae.compare` on one random batch of test images, ``--snr-repeats`` draws).

Runs resume from ``--runs-dir``/ESTIMATOR (the same command continues a killed run), and
evaluations are cached there. The table and a figure replace the ``discrete`` section of
``--out``::

    OMP_NUM_THREADS=1 python examples/discrete_estimators.py --epochs 50 --out docs/results.md
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import pyro
import torch

import pyrovae
from pyrovae.plots import figure, save

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_estimators import REPO, cached, markdown, replace_section  # noqa: E402

SECTION = "discrete"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "binarized_mnist"))
    p.add_argument("--latent-sizes", default="200", help="Bernoulli units per layer, bottom first")
    p.add_argument("--particles", type=int, default=5, help="latent draws per data point and step")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-samples", type=int, default=5000, help="importance samples per test image")
    p.add_argument("--eval-limit", type=int, help="evaluate N test images drawn at random (default: all)")
    p.add_argument("--snr-repeats", type=int, default=100, help="gradient draws per estimator")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs-dir", default="runs/discrete")
    p.add_argument("--out", default="docs/results.md", help="markdown file whose section is replaced")
    p.add_argument("--figure", default="docs/discrete.png")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def specs(k: int) -> dict[str, str]:
    """Label -> estimator spec, every one drawing ``k`` latent samples per data point and step."""
    return {
        f"vimco (k={k})": f"vimco:k={k}",
        f"rws (k={k})": f"rws:k={k}",
        f"tracegraph ({k} particles)": f"tracegraph:num_particles={k}:vectorize_particles=true",
    }


def build(args) -> pyrovae.SBN:
    """The SBN, with the same initial parameters for every estimator."""
    sizes = tuple(int(s) for s in args.latent_sizes.split(","))
    pyro.set_rng_seed(args.seed)
    return pyrovae.SBN((1, 28, 28), latent_sizes=sizes)


def train(label: str, spec: str, args, data) -> tuple[pyrovae.SBN, pd.DataFrame]:
    sbn = build(args)
    run_dir = Path(args.runs_dir) / spec.split(":")[0]
    result = pyrovae.fit(
        sbn,
        data["train"],
        data["valid"],
        estimator=spec,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        run_dir=run_dir,
        resume=True,
        progress=not args.no_progress,
    )
    print(f"{label}: {result.summary().splitlines()[0]}")
    return result.vae, result.history


def evaluate(label: str, spec: str, sbn, args, test, batch, names) -> dict:
    """Test NLL and gradient SNRs of the trained ``sbn``, cached in its run directory."""
    path = Path(args.runs_dir) / spec.split(":")[0] / "evaluation.json"
    key = {"epochs": args.epochs, "eval_samples": args.eval_samples, "eval_limit": args.eval_limit,
           "snr_repeats": args.snr_repeats}  # fmt: skip
    return cached(path, key, lambda: measure(label, sbn, args, test, batch, names))


def measure(label: str, sbn, args, test, batch, names) -> dict:
    """Test NLL (IS-``--eval-samples``) and the gradient SNRs of every estimator at ``sbn``."""
    start = time.perf_counter()
    ll = pyrovae.log_likelihood(
        sbn.model, sbn.guide, test, args.eval_samples, seed=args.seed, progress=not args.no_progress
    )
    elapsed = time.perf_counter() - start
    snr = pyrovae.compare(
        sbn.model, sbn.guide, batch, names, num_repeats=args.snr_repeats, seed=args.seed,
        progress=not args.no_progress,
    ).to_dataframe()  # fmt: skip
    good, ok, bad = ll.khat_counts()
    return {
        "estimator": label,
        "test NLL": float(ll.nll),
        "± se": float(ll.stderr),
        "median ESS": float(ll.ess.median()),
        "k-hat <0.5 / 0.5-0.7 / >0.7": f"{good} / {ok} / {bad}",
        "eval s": elapsed,
        **{f"guide SNR, {n.split(':')[0]}": float(snr.loc[n, "guide_snr"]) for n in names},
        **{f"model SNR, {n.split(':')[0]}": float(snr.loc[n, "model_snr"]) for n in names},
    }


def draw(histories: dict[str, pd.DataFrame], path: Path) -> None:
    fig = figure(figsize=(11, 4.2))
    train_ax, valid_ax = fig.subplots(1, 2)
    for label, history in histories.items():
        train_ax.plot(history["epoch"], history["train_loss"], label=label)
        valid_ax.plot(history["epoch"], history["valid_loss"], label=label)
    train_ax.set_title("training objective (VIMCO, RWS: -IWAE-k; TraceGraph: -ELBO)", fontsize=10)
    valid_ax.set_title("validation bound (each estimator's own)", fontsize=10)
    for ax in (train_ax, valid_ax):
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image")
        ax.grid(alpha=0.3)
    valid_ax.legend()
    fig.suptitle("Sigmoid belief network on statically binarized MNIST: learning curves")
    fig.tight_layout()
    save(fig, path)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    data = {
        split: pyrovae.load("binarized-mnist", split, root=args.data_root)
        for split in ("train", "valid", "test")
    }
    source = pyrovae.DataSource(data["test"])
    limit = args.eval_limit or len(source)
    (test,) = source.sample(limit, seed=args.seed)
    (batch,) = source.sample(args.batch_size, seed=args.seed + 1)
    labelled = specs(args.particles)
    names = list(labelled.values())
    rows, histories, hours = [], {}, {}
    for label, spec in labelled.items():
        sbn, history = train(label, spec, args, data)
        histories[label], hours[label] = history, history["seconds"].sum() / 3600
        row = evaluate(label, spec, sbn, args, test, batch, names)
        rows.append({**row, "train h": hours[label], "s / epoch": float(history["seconds"].mean())})
        print(", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in rows[-1].items()))
    first = ["estimator", "test NLL", "± se", "median ESS", "k-hat <0.5 / 0.5-0.7 / >0.7", "eval s"]
    snr = [f"{part} SNR, {n.split(':')[0]}" for part in ("guide", "model") for n in names]
    table = pd.DataFrame(rows)[[*first, *snr, "train h", "s / epoch"]]  # a cached row's keys are sorted
    draw(histories, Path(args.figure))
    sizes = args.latent_sizes.replace(",", "-")
    limit_flag = "" if args.eval_limit is None else f" --eval-limit {args.eval_limit}"
    text = f"""## Estimators on discrete latents: a sigmoid belief network (`examples/discrete_estimators.py`)

> **Short budget.** {args.epochs} epochs, far from convergence (the papers train for thousands), so the
> rows compare the estimators with each other at equal cost; they are not the converged NLLs the
> papers report (for orientation: RELAX (Grathwohl et al. 2018, their LaTeX table) reports the best
> *training* ELBO of a linear one-layer 200-unit SBN as -111.3 for NVIL and -111.2 for RELAX).

The SBN of the VIMCO, RWS and NVIL papers, {sizes} Bernoulli units (linear-logistic layers, linear
recognition network, learned top bias; `pyrovae.SBN`), on statically binarized MNIST, trained from the
same initial parameters with each estimator at the same budget: {args.epochs} epochs of batches of
{args.batch_size}, Adam {args.lr:g}, seed {args.seed}, and {args.particles} latent draws per image and step
(TraceGraph with {args.particles} vectorized particles and NVIL's input-dependent baseline). Evaluated on
{"all 10,000" if limit == len(source) else f"{limit} randomly drawn"} test images with {args.eval_samples:,}
importance samples each (the guide as proposal) at the last epoch's parameters. "guide SNR, NAME" is
the median signal-to-noise ratio |mean|/sd of the recognition network's gradient elements under
estimator NAME, drawn {args.snr_repeats} times on one random batch of {args.batch_size} test images at
that row's trained parameters (`pyrovae.compare`); "model SNR" the same for the generative network.
Wall times on one thread of a 2-core machine shared with other runs ({platform.machine()}, torch
{torch.__version__}).

{markdown(table)}

![learning curves](discrete.png)

Reproduce with `OMP_NUM_THREADS=1 python examples/discrete_estimators.py --epochs {args.epochs}
--particles {args.particles} --latent-sizes {args.latent_sizes}{limit_flag} --out docs/results.md`.
"""
    replace_section(Path(args.out), SECTION, text)
    print(markdown(table))


if __name__ == "__main__":
    main()
