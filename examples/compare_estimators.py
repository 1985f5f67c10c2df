"""Train one binarized-MNIST VAE with each of several estimators for the same budget, and compare.

Every estimator trains the same model (784-400-50 softplus MLPs, Bernoulli likelihood, standard
normal prior) from the same initial parameters, on statically binarized MNIST, for the same number
of epochs (batch 100, Adam 1e-3, no validation). Each trained model is then evaluated on
``--eval-limit`` test images drawn at random (seed ``--seed``) by importance sampling with
``--eval-samples`` draws per image, which
also gives its ELBO and IWAE-5 and IWAE-50 bounds on the same draws. The results table (with the
budget and wall times) and a figure replace the ``estimators`` section of ``--out``::

    python examples/compare_estimators.py --epochs 3 --out docs/results.md

Each run's checkpoints and history go to ``--runs-dir``/ESTIMATOR; the runs resume from there (the
same command continues a killed study), and each evaluation is cached there, keyed by the settings it
depends on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pyro
import torch
from tqdm.auto import tqdm

import pyrovae
from pyrovae.infer.ladder import bounds
from pyrovae.plots import save
from pyrovae.storage import write_json, write_text

REPO = Path(__file__).resolve().parents[1]
ESTIMATORS = "elbo,iwae:k=5,iwae:k=50,dreg:k=5,dreg:k=50,stl"
SECTION = "estimators"
TITLE = "# Results\n\nMeasured results of pyrovae, one section per study; each says how to reproduce it.\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default=str(REPO.parent / "shared" / "data" / "binarized_mnist"))
    p.add_argument("--estimators", default=ESTIMATORS, help="estimator specs separated by commas")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-samples", type=int, default=5000, help="importance samples per test image")
    p.add_argument("--eval-limit", type=int, default=1000, help="evaluate on N test images drawn at random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/results.md", help="markdown file whose section is replaced")
    p.add_argument("--runs-dir", default="runs/compare-estimators")
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core machine)"
    )
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args()


def cached(path: Path, key: dict, compute: Callable[[], dict]) -> dict:
    """The row ``compute()`` returns, cached in the JSON file ``path`` with ``key`` (the settings it
    depends on): a rerun with the same settings reads it back; other settings recompute it."""
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored["key"] == key:
            return stored["row"]
    row = compute()
    write_json(path, {"key": key, "row": row})
    return row


def train_and_evaluate(spec: str, args, train, test: torch.Tensor, bar) -> tuple[dict, pd.DataFrame]:
    pyro.set_rng_seed(args.seed)  # the same initial parameters for every estimator
    vae = pyrovae.VAE((1, 28, 28), latent_dim=50, hidden=(400,), activation="softplus")
    bar.set_postfix_str(f"training {spec}")
    run_dir = Path(args.runs_dir) / spec.replace(":", "-").replace("=", "")
    result = pyrovae.fit(
        vae,
        train,
        estimator=spec,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        run_dir=run_dir,
        resume=True,
        progress=not args.no_progress,
    )
    key = {"epochs": args.epochs, "eval_samples": args.eval_samples, "eval_limit": args.eval_limit,
           "seed": args.seed}  # fmt: skip
    bar.set_postfix_str(f"evaluating {spec}")
    row = cached(
        run_dir / "evaluation.json", key, lambda: evaluate(spec, result.vae, result.history, test, args)
    )
    return row, result.history.assign(estimator=spec)


def evaluate(spec: str, vae, history: pd.DataFrame, test: torch.Tensor, args) -> dict:
    """The bounds and test NLL of the trained ``vae``, with the training's wall times."""
    ks = sorted({1, 5, 50, args.eval_samples})
    ladder = bounds(vae.model, vae.guide, test, ks=ks, analytic_kl=False, seed=args.seed, progress=False)
    name = {k: n for n, k in ladder.ks.items()}
    ll = ladder.log_likelihood
    return {
        "estimator": spec,
        "train objective (last epoch)": float(history["train_loss"].iloc[-1]),
        "test -ELBO": -float(ladder.mean[name[1]]),
        "test -IWAE-5": -float(ladder.mean[name[5]]),
        "test -IWAE-50": -float(ladder.mean[name[50]]),
        f"test NLL (IS-{args.eval_samples})": float(ll.nll),
        "± se": float(ll.stderr),
        "train s": float(history["seconds"].sum()),
        "s / epoch": float(history["seconds"].mean()),
        "eval s": ladder.elapsed,
    }


def figure(table: pd.DataFrame, histories: pd.DataFrame, nll: str, path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for spec, history in histories.groupby("estimator", sort=False):
        left.plot(history["epoch"], history["train_loss"], marker="o", label=spec)
    left.set_xticks(sorted(histories["epoch"].unique()))
    left.set_xlabel("epoch")
    left.set_ylabel("training objective (negative bound, nats)")
    left.legend()
    left.grid(alpha=0.3)
    right.bar(
        table["estimator"],
        table[nll],
        yerr=table["± se"],
        capsize=3,
        color=[f"C{i}" for i in range(len(table))],
    )
    low, high = table[nll].min(), table[nll].max()
    right.set_ylim(low - 1.5 - 0.2 * (high - low), high + 1.0 + 0.2 * (high - low))
    right.set_ylabel(f"{nll}, nats")
    right.tick_params(axis="x", rotation=30)
    right.grid(axis="y", alpha=0.3)
    save(fig, path)


def markdown(table: pd.DataFrame, decimals: dict[str, int] | None = None) -> str:
    """A markdown table, numbers with two decimals (or as many as ``decimals`` gives for a column); a
    missing number (NaN) is shown as a dash."""
    places = [(decimals or {}).get(column, 2) for column in table.columns]
    cells = [
        [
            ("—" if math.isnan(v) else f"{v:.{p}f}") if isinstance(v, float) else str(v)
            for v, p in zip(row, places, strict=True)
        ]
        for row in table.itertuples(index=False)
    ]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + " --- |" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def section_markers(name: str) -> tuple[str, str]:
    """The comments that open and close section ``name`` of a results file (:func:`replace_section`)."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(path: Path, name: str, text: str) -> None:
    """Write ``text`` between the markers of section ``name`` of ``path`` (created with a title,
    the section appended, if absent), leaving the rest of the file as it is."""
    start, end = section_markers(name)
    block = f"{start}\n{text.strip()}\n{end}"
    old = path.read_text() if path.exists() else TITLE
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    new = pattern.sub(lambda _: block, old) if pattern.search(old) else old.rstrip() + "\n\n" + block + "\n"
    write_text(path, new)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    specs = [s.strip() for s in args.estimators.split(",") if s.strip()]
    train = pyrovae.load("binarized-mnist", "train", root=args.data_root)
    test_set = pyrovae.load("binarized-mnist", "test", root=args.data_root)
    (test,) = pyrovae.DataSource(test_set).sample(args.eval_limit, seed=args.seed)
    out = Path(args.out)
    start = time.perf_counter()
    rows, histories = [], []
    with tqdm(specs, desc="estimators", unit="estimator", disable=args.no_progress) as bar:
        for spec in bar:
            row, history = train_and_evaluate(spec, args, train, test, bar)
            rows.append(row)
            histories.append(history)
            print(", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    total = time.perf_counter() - start
    nll = f"test NLL (IS-{args.eval_samples})"
    columns = ["estimator", "train objective (last epoch)", "test -ELBO", "test -IWAE-5", "test -IWAE-50"]
    columns += [nll, "± se", "train s", "s / epoch", "eval s"]
    table = pd.DataFrame(rows)[columns]  # a cached row's keys are sorted
    plot = out.parent / "estimators.png"
    figure(table, pd.concat(histories), nll, plot)
    steps = -(-len(train) // args.batch_size) * args.epochs
    text = f"""
## Estimators compared on binarized MNIST

> **Short budget.** {args.epochs} epoch(s), far from convergence, so the rows compare the estimators
> with each other at equal cost; they are not the converged NLLs the papers report. For orientation,
> at convergence (3,280 epochs, 784-200-200-50 tanh networks, dynamically binarized MNIST, IS-5000):
> VAE 86.76, IWAE k = 5 85.54 and k = 50 84.78 (Burda et al. 2015, Table 1); MIWAE(8, 8) 84.97,
> PIWAE(8, 8) 84.46 and CIWAE with β = 0.05 on the ELBO (`ciwae:k=64:mix=0.05` here) 84.57
> (Rainforth et al. 2018, "Tighter variational bounds are not necessarily better").

The same VAE (784-400-50 softplus MLPs, Bernoulli likelihood, N(0, I) prior, the same initial
parameters) trained on statically binarized MNIST ({len(train):,} training images) with each estimator
for the same budget: {args.epochs} epoch(s) = {steps:,} steps of batch {args.batch_size}, Adam, learning
rate {args.lr:g}, seed {args.seed}, no validation or early stopping. Evaluated on
**{len(test):,} test images drawn at random** (seed {args.seed}) with {args.eval_samples:,}
importance samples per image; the ELBO and IWAE-k rows are estimated from the same draws (groups of k).
Lower is better everywhere; "train objective" is each estimator's own negative bound over the last epoch;
"± se" is the standard error of the NLL across the images (differences between rows, on the same images,
are known more precisely than that).
Wall times on {os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__} with
{torch.get_num_threads()} thread(s), on a machine shared with other jobs (times are indicative); the
runs took {table["train s"].sum() / 60:.1f} min of training and {table["eval s"].sum() / 60:.1f} min of
evaluation (the sums of the rows' wall times, which a resumed study keeps).

{markdown(table)}

![training curves and test NLL]({plot.relative_to(out.parent).as_posix()})

Reproduce with `python examples/compare_estimators.py --epochs {args.epochs}
--eval-samples {args.eval_samples} --eval-limit {args.eval_limit} --estimators {",".join(specs)}
--out {args.out}`.
"""
    replace_section(out, SECTION, text)
    print(table.to_string(index=False))
    print(f"wrote {out} (section {SECTION!r}) and {plot}; {total / 60:.1f} min in all")


if __name__ == "__main__":
    main()
