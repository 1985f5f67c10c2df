"""How precise is AIS, and how loose is importance sampling? Per-point spread and the BDMC gap.

Two models, at several numbers of annealing steps (``--steps``, 16 chains, HMC with 10 leapfrog steps):

- ``ppca``: a linear-Gaussian model with an exact log p(x) (10-dimensional data, 3 latents, the model of
  ``tests/toy_models.py``), 20 data points, a mean-field guide whose means are shifted by 0.5 and whose scales
  are 0.7 times the posterior's. Its figures: the mean and the standard deviation over the points of
  AIS - exact (seed 0).
- a trained run (``--run-dir``, such as ``runs/bmnist10``), on test images drawn at random (``--images``, one
  number per ``--steps``: the test file is ordered by class), where log p(x) is unknown: the mean of two
  seeds' estimates, its gain over IWAE-5000 on the same images, and the per-image spread of one run (the
  standard deviation over the images of the difference between the two seeds, divided by the square root
  of 2).

For each, BDMC (Grosse et al. 2015) on data simulated from the model: the gap between reverse and forward
AIS with the same steps, which bounds the error of either.

``measure`` computes one configuration, under ``--label``, with the pyrovae it imports: so the same command
measures an earlier version too, run with ``PYTHONPATH`` pointing to its checkout. Each stage is saved under
``--cache-dir`` as it ends, and a later call skips it. ``report`` writes the ``ais`` section of ``--out`` and
its figure from every label measured::

    OMP_NUM_THREADS=1 python examples/ais_bdmc.py measure --label default --run-dir runs/bmnist10
    OMP_NUM_THREADS=1 python examples/ais_bdmc.py measure --label "fixed 0.05" --fixed 0.05
    python examples/ais_bdmc.py report --run-dir runs/bmnist10 --out docs/results.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch

import pyrovae
from pyrovae.plots import save
from pyrovae.storage import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from compare_estimators import markdown, replace_section  # noqa: E402
from toy_models import PPCA, offset_guide  # noqa: E402

SECTION = "ais"
CHAINS, LEAPFROG_STEPS, PPCA_POINTS = 16, 10, 20


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["measure", "report"])
    p.add_argument("--label", default="default", help="measure: the name of this configuration")
    p.add_argument("--fixed", type=float, help="measure: a fixed step size, without adaptation")
    p.add_argument("--models", default="ppca,run", help="measure: ppca, run (--run-dir) or both")
    p.add_argument("--run-dir", default="runs/bmnist10")
    p.add_argument("--steps", default="100,1000,10000", help="annealing steps, separated by commas")
    p.add_argument("--images", default="32,32,8", help="test images of the run, one number per --steps")
    p.add_argument("--bdmc", type=int, default=16, help="data points simulated from the run's model")
    p.add_argument(
        "--bdmc-steps", default="100,1000", help="the --steps at which BDMC runs on the run (PPCA: every one)"
    )
    p.add_argument("--bdmc-chains", type=int, default=4, help="chains per simulated image of the run")
    p.add_argument("--iwae-samples", type=int, default=5000)
    p.add_argument("--cache-dir", default="runs/ais-bdmc")
    p.add_argument("--out", default="docs/results.md")
    return p.parse_args()


def ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def stage(path: Path, compute, **sizes) -> dict:
    """The saved figures of a stage, computed and saved first if missing; a saved stage measured at other
    ``sizes`` (such as ``images``) is refused."""
    if path.exists():
        saved = json.loads(path.read_text())
        other = {k: saved[k] for k, v in sizes.items() if k in saved and saved[k] != v}
        if other:
            raise SystemExit(f"{path} was measured with {other}, not {sizes}: remove it to measure again")
        return saved
    start = time.perf_counter()
    figures = {**compute(), "elapsed": time.perf_counter() - start}
    write_json(path, figures)
    print(f"{path}: {json.dumps(figures)}", flush=True)
    return figures


def measure(args: argparse.Namespace) -> None:
    cache = Path(args.cache_dir) / args.label
    options = {"num_chains": CHAINS, "leapfrog_steps": LEAPFROG_STEPS, "progress": False}
    if args.fixed is not None:
        options.update(adapt_step_size=False, step_size=args.fixed)
    steps, images = ints(args.steps), ints(args.images)
    bdmc_steps = ints(args.bdmc_steps)
    if len(images) != len(steps):
        raise SystemExit("--images needs one number per --steps")
    models = args.models.split(",")
    if "ppca" in models:
        model = PPCA(data_dim=10, latent_dim=3)
        x, guide = model.sample(PPCA_POINTS), offset_guide(model, 0.5, 0.7)
        exact = model.log_px(x)
        for t in steps:

            def forward(t=t):
                r = pyrovae.ais(model.model, guide, x, num_steps=t, seed=0, **options)
                error = r.log_px.double() - exact
                return {"mean": float(error.mean()), "spread": float(error.std()), **_ais_figures(r)}

            stage(cache / f"ppca-ais-{t}.json", forward)
            stage(
                cache / f"ppca-bdmc-{t}.json", lambda t=t: _bdmc(model.model, guide, PPCA_POINTS, t, options)
            )
    if "run" in models:
        run = pyrovae.load_run(args.run_dir)
        test = run.load_data("test")
        name, vae = Path(args.run_dir).name, run.vae
        for t, n in zip(steps, images, strict=True):
            (x,) = pyrovae.DataSource(test).sample(n, seed=0)

            def forward(t=t, x=x):
                a, b = (pyrovae.ais(vae.model, vae.guide, x, num_steps=t, seed=s, **options) for s in (0, 1))
                estimates = torch.stack([a.log_px, b.log_px]).double()
                return {
                    "images": len(x),
                    "log_px": estimates.mean(0).tolist(),
                    "spread": float((estimates[0] - estimates[1]).std() / 2**0.5),
                    **_ais_figures(a),
                }

            stage(cache / f"{name}-ais-{t}.json", forward, images=n)
            if t not in bdmc_steps:
                continue
            chains = {**options, "num_chains": args.bdmc_chains}
            stage(
                cache / f"{name}-bdmc-{t}.json",
                lambda t=t, chains=chains: _bdmc(vae.model, vae.guide, args.bdmc, t, chains),
            )
        (x,) = pyrovae.DataSource(test).sample(max(images), seed=0)
        stage(
            Path(args.cache_dir) / f"{name}-iwae-{args.iwae_samples}.json",
            lambda: {
                "log_px": pyrovae.log_likelihood(
                    vae.model, vae.guide, x, args.iwae_samples, seed=0, progress=False
                ).log_px.tolist()
            },
        )


def _ais_figures(r) -> dict:
    return {
        "se": float(r.log_px_se.mean()),
        "acceptance": float(r.acceptance.mean()),
        "step_size": float(r.step_size.median()),
    }


def _bdmc(model, guide, num_data: int, num_steps: int, options: dict) -> dict:
    b = pyrovae.bdmc(model, guide, num_data, num_steps=num_steps, seed=0, **options)
    gap = b.gap.double()
    return {
        "gap": float(gap.mean()),
        "gap_se": float(gap.std() / len(gap) ** 0.5),
        "gap_max": float(gap.max()),
    }


def report(args: argparse.Namespace) -> None:
    cache, name = Path(args.cache_dir), Path(args.run_dir).name
    labels = sorted(p.name for p in cache.iterdir() if p.is_dir())
    iwae_path = next(cache.glob(f"{name}-iwae-*.json"), None)
    if iwae_path is None:
        raise SystemExit(f"nothing measured on {name} in {cache}: run measure with --run-dir {args.run_dir}")
    iwae = torch.tensor(json.loads(iwae_path.read_text())["log_px"], dtype=torch.float64)
    rows = {"ppca": [], name: []}
    for label in labels:
        for model in rows:
            for path in sorted(
                (cache / label).glob(f"{model}-ais-*.json"), key=lambda p: int(p.stem.split("-")[-1])
            ):
                t = int(path.stem.split("-")[-1])
                ais = json.loads(path.read_text())
                bdmc_path = path.with_name(f"{model}-bdmc-{t}.json")
                bdmc = json.loads(bdmc_path.read_text()) if bdmc_path.exists() else {}
                row = {"steps": t, "step sizes": label}
                if model == "ppca":
                    row |= {"mean(AIS − exact)": ais["mean"], "sd over points": ais["spread"]}
                else:
                    log_px = torch.tensor(ais["log_px"], dtype=torch.float64)
                    row |= {
                        "images": ais["images"],
                        "NLL": float(-log_px.mean()),
                        f"gain over IWAE-{iwae_path.stem.split('-')[-1]}": float(
                            (log_px - iwae[: len(log_px)]).mean()
                        ),
                        "spread per image": ais["spread"],
                    }
                row |= {
                    "acceptance": ais["acceptance"],
                    "BDMC gap": bdmc.get("gap", float("nan")),
                    "± se": bdmc.get("gap_stderr", float("nan")),
                    "wall s": ais["elapsed"] / (1 if model == "ppca" else 2),
                    "BDMC wall s": bdmc.get("elapsed", float("nan")),
                }
                rows[model].append(row)
    tables = {model: pd.DataFrame(r).sort_values(["steps", "step sizes"]) for model, r in rows.items()}
    out = Path(args.out)
    plot = out.parent / "ais-bdmc.png"
    figure(tables, name, plot)
    precise = ("mean(AIS − exact)", "sd over points", "spread per image", "BDMC gap", "± se")
    ppca, mnist = (markdown(tables[m], dict.fromkeys(precise, 3)) for m in ("ppca", name))
    text = f"""
## AIS and BDMC: how precise is AIS, how loose is importance sampling?

Annealed importance sampling (`pyrovae.ais`: from the guide, sigmoid schedule, {CHAINS} chains, HMC with
{LEAPFROG_STEPS} leapfrog steps) at 100, 1,000 and 10,000 steps, with three choices of step sizes:
**default** (this version: step sizes adapted toward acceptance 0.65 by a pilot of 4 chains that runs beside
the chains, each trajectory no longer than 3 times the pilot's estimate of the posterior's scale, each
chain's step size jittered by ±50% at every transition; see `pyrovae.infer.annealing`), **previous** (the
adaptation before the issue "AIS as precise as its cost": acceptance alone, the pilot in a pass of its
own, no jitter) and **fixed 0.05** (no adaptation, no jitter). The BDMC gap (reverse minus forward AIS with
the same steps, on data simulated from the model, Grosse et al. 2015) bounds the error of either bound.

**A linear-Gaussian model with an exact log p(x)** (10-dimensional data, 3 latents; 20 data points; a guide
whose means are shifted by 0.5 and whose scales are 0.7 times the posterior's). "sd over points" is the
per-point error of one run; BDMC on 20 simulated points with 16 chains.

{ppca}

**The 10-epoch binarized-MNIST VAE** (`{name}`: 784-400-50 softplus, Bernoulli), on test images drawn
at random (seed 0; the first of the same 32 where there are fewer). log p(x) is unknown: "NLL" is the mean of
two seeds' estimates, its "gain" the paired difference from importance sampling with the guide on the same
images (a lower bound too: a positive gain is how loose IS is), "spread per image" the standard deviation of
one run's error from run-to-run variation (of the two seeds' difference, over √2). BDMC on {args.bdmc}
simulated images with {args.bdmc_chains} chains. Wall time per run (BDMC: both directions).

{mnist}

![AIS's per-point spread and the BDMC gap against the number of steps]({plot.name})

Wall times on {os.cpu_count()} CPU cores ({platform.machine()}), torch {torch.__version__} with one thread,
each label's runs beside another's on a machine shared with other jobs (indicative only; the fixed step's on
the trained run ran at a lower priority). `benchmarks/bench_ais.py` measures the price of the adaptation in
one process: 1.04 times a fixed step's time on the linear-Gaussian model, whose steps cost the price of
tracing it, and 1.22 on the MNIST VAE, whose arithmetic fills a CPU core (the pilot's quarter more chains).
Reproduce with `OMP_NUM_THREADS=1 python examples/ais_bdmc.py measure --label default --run-dir
{args.run_dir}`; **previous** and **fixed 0.05** with the same command at the commit before the issue
(`PYTHONPATH` pointing to its checkout; `--label previous`, and `--label "fixed 0.05" --fixed 0.05` with
`--models ppca`, then with `--models run --steps 100,1000 --images 32,32`), then `python
examples/ais_bdmc.py report --run-dir {args.run_dir}`. The BDMC rows of the trained run have 4 chains, so
a pilot of one chain: the default's trajectory cap needs two (`pyrovae.infer.annealing`).
"""
    replace_section(out, SECTION, text)
    for model, table in tables.items():
        print(model, table.to_string(index=False), sep="\n")
    print(f"wrote {out} (section {SECTION!r}) and {plot}")


def figure(tables: dict[str, pd.DataFrame], name: str, path: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), layout="constrained", sharex=True)
    spreads = {"ppca": "sd over points", name: "spread per image"}
    titles = {"ppca": "linear-Gaussian (exact log p(x))", name: f"{name} (MNIST test images)"}
    for column, (model, table) in enumerate(tables.items()):
        for i, (label, rows) in enumerate(table.groupby("step sizes")):
            style = {"color": f"C{i}", "marker": "o", "label": label}
            axes[0, column].plot(rows["steps"], rows[spreads[model]], **style)
            dodged = rows["steps"] * 1.12 ** (i - 1)  # side by side at each number of steps
            axes[1, column].errorbar(dodged, rows["BDMC gap"], yerr=2 * rows["± se"], capsize=3, **style)
        axes[0, column].set_title(titles[model])
        axes[0, column].set_ylabel(f"{spreads[model]} (nats)")
        axes[0, column].set_yscale("log")
        axes[1, column].set_ylabel("BDMC gap (nats, ± 2 se)")
        axes[1, column].axhline(0, color="k", linewidth=0.8)  # a gap below 0 is noise: the bounds' order
        axes[1, column].set_xlabel("annealing steps")
        for ax in axes[:, column]:
            ax.set_xscale("log")
            ax.grid(True, which="major", alpha=0.3)
        axes[0, column].legend()
    save(fig, path)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    if args.command == "measure":
        measure(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
