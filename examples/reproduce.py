"""Reproduce the VampPrior paper's MNIST results: VAE and two-layer HVAE, standard prior and VampPrior.

Tomczak & Welling (2018), "VAE with a VampPrior", AISTATS: four fully connected models on
statically binarized MNIST, each trained by its own command and evaluated by importance sampling::

    python examples/reproduce.py vae-standard     # or vae-vamp, hvae-standard, hvae-vamp
    python examples/reproduce.py progress         # one line per configuration under --runs-dir
    python examples/reproduce.py report --out docs/results.md   # the table and learning curves
    python examples/reproduce.py compare --runs-dir runs/clamp --against runs/reproduce   # a variant

The paper's recipe, as in the authors' code (``github.com/jmtomczak/vae_vampprior``:
``experiment.py``, ``utils/perform_experiment.py``, ``utils/training.py``, ``models/VAE.py``,
``models/HVAE_2level.py``): gated dense layers of 300 units, two per network (``network="gated"``
of :mod:`pyrovae.models.nn`), z = 40 (z1 = z2 = 40 for the HVAE), K = 500 pseudo-inputs for the
VampPrior, a Bernoulli likelihood; Adam with learning rate 5e-4, batches of 100, the KL weight
rising linearly over 100 epochs (β = epoch / 100), early stopping when the validation negative
ELBO has not improved for 50 epochs, at most 2,000 epochs; the parameters of the best
validation epoch are evaluated on all 10,000 test images with 5,000 importance samples each.

Each configuration trains in ``--runs-dir``/NAME, a run directory of :func:`pyrovae.fit` that
``pyrovae sample``, ``pyrovae evaluate`` and ``pyrovae.load_run`` read too. Training always
resumes: the same command continues a killed run from its last completed epoch, and finishes
(evaluates) a run whose training has ended. The evaluation is written to ``reproduce.json``
(test NLL and its standard error, median ESS, PSIS k-hat counts, epochs, wall times, device) and
``log_px-test.csv`` (the estimate for every test image, for paired comparisons).

Differences from the authors' code that are kept:

- Objective scale: pyrovae minimizes the data set's negative ELBO (each batch's sum scaled by
  N / B, see :mod:`pyrovae.train.loop`), theirs the batch mean: the gradients differ by the
  constant N = 50,000, which their optimizer, ``AdamNormGrad`` (:class:`pyrovae.train.optim.AdamNormGrad`,
  used here as ``optimizer="adam-normgrad"``), removes by normalizing each gradient.
- Early stopping: pyrovae counts epochs without a better validation bound from the first epoch
  and stops after 50; theirs holds the count at 0 during the 100 warm-up epochs and stops after
  51.
- Likelihood: the decoder gives Bernoulli logits (:mod:`pyrovae.models.likelihoods`) where theirs gives
  sigmoid means, the same model; their ``log_Bernoulli`` clamps the means to [1e-5, 1 - 1e-5]
  (``utils/distributions.py``), in training and evaluation alike; pyrovae's log-density is exact.
  ``--bernoulli-clamp 1e-5`` trains and evaluates with theirs (the likelihood
  ``"bernoulli:clamp=1e-05"``); give such runs a ``--runs-dir`` of their own.
- Pseudo-inputs: a ``(500, 1, 28, 28)`` parameter, where theirs are a linear layer applied to the
  500 x 500 identity matrix: the same function class and parameters (see
  :class:`pyrovae.models.priors.VampPrior`).
- Seed 0 (theirs 14; ``--seed``), and the random streams of shuffling, initialization and sampling differ.

The networks themselves are the authors': layer sizes, the gates, the log-variances clamped to
[-6, 2], He-initialized weights, and how the HVAE joins x with z2 and z1 with z2. (When this
example was written, the authors' four models were built from their code with its weights
copied into pyrovae's: the parameter counts were equal and the log-weights
log p(x, z) - log q(z | x) at the same z agreed to float32 precision.)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import pandas as pd
import pyro
import torch

import pyrovae
from pyrovae import devices
from pyrovae.errors import ConfigError, PyroVAEError
from pyrovae.models.hvae import HVAE
from pyrovae.models.vae import VAE
from pyrovae.options import check_option
from pyrovae.plots import figure, save
from pyrovae.runs.directory import CHECKPOINT, RunDirectory, checkpoint_bytes, read_state
from pyrovae.runs.outputs import output_set
from pyrovae.runs.run import MUTABLE, RunConfig
from pyrovae.storage import digest, write_json, write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_estimators import markdown, replace_section, section_markers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA_ROOT = REPO.parent / "shared" / "data" / "binarized_mnist"
EVENT_SHAPE = (1, 28, 28)
#: name: (model, prior of the top latent), the paper's four fully connected models
CONFIGS = {
    "vae-standard": ("vae", "normal"),
    "vae-vamp": ("vae", "vamp"),
    "hvae-standard": ("hvae", "normal"),
    "hvae-vamp": ("hvae", "vamp"),
}
#: the paper's test NLL in nats (static MNIST, IS-5000), from ../shared/REFERENCE.md, which marks
#: all but the VAE with the VampPrior as recalled
PAPER_NLL = {"vae-standard": 88.56, "vae-vamp": 85.57, "hvae-standard": 86.05, "hvae-vamp": 83.19}
SUMMARY = "reproduce.json"
PER_IMAGE = "log_px-test.csv"
TIGHTNESS = "ais-subset.json"


def run_config(
    name: str,
    *,
    epochs: int = 2000,
    data_root: str | Path = DATA_ROOT,
    device: str = "auto",
    seed: int = 0,
    bernoulli_clamp: float = 0.0,
) -> RunConfig:
    """The configuration ``name`` of :data:`CONFIGS`: the paper's model and training recipe, from
    ``seed``; with ``bernoulli_clamp``, the Bernoulli probabilities clamped to [clamp, 1 - clamp] as in
    the authors' code."""
    model, prior = CONFIGS[name]
    return RunConfig(
        dataset="binarized-mnist",
        data_root=str(data_root),
        likelihood=f"bernoulli:clamp={bernoulli_clamp!r}" if bernoulli_clamp else "bernoulli",
        model=model,
        prior=prior,
        prior_components=500 if prior == "vamp" else None,
        network="gated",
        latent_dim=40,
        latent_dim2=40 if model == "hvae" else None,
        hidden=[300, 300],
        estimator="elbo",
        epochs=epochs,
        batch_size=100,
        lr=5e-4,
        optimizer="adam-normgrad",
        kl_warmup=100,
        patience=50,
        seed=seed,
        device=device,
    )


def build(name: str) -> VAE | HVAE:
    """The untrained model of configuration ``name``."""
    return run_config(name).build_vae(EVENT_SHAPE)


#: the section of ``--out`` that ``report`` rewrites (:func:`section_markers`)
SECTION = "reproduction-table"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "name",
        choices=[*CONFIGS, "progress", "report", "compare"],
        help="a configuration to train; progress (one line per run); report (the table and figure); "
        "compare (the runs of --runs-dir against those of --against)",
    )
    p.add_argument("--epochs", type=int, default=2000, help="the most epochs to train")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--eval-samples", type=int, default=5000, help="importance samples per test image")
    p.add_argument("--runs-dir", default="runs/reproduce", help="run directories, one per configuration")
    p.add_argument("--data-root", default=str(DATA_ROOT), help="where binarized_mnist_*.amat(.gz) are")
    p.add_argument("--no-eval", action="store_true", help="train only; evaluate in a later call")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the initial parameters, the shuffling and the draws"
    )
    p.add_argument(
        "--bernoulli-clamp",
        type=float,
        default=0.0,
        help="train and evaluate with the Bernoulli probabilities clamped to [C, 1 - C], as the authors' "
        "code does (1e-5; 0: exact)",
    )
    p.add_argument("--ais-images", type=int, default=0, help="AIS on this many random test images (0: none)")
    p.add_argument("--ais-steps", type=int, default=1000, help="annealing steps of that AIS (16 chains)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", default="docs/results.md", help="report: the Markdown file to rewrite")
    p.add_argument("--figure", default="docs/reproduce.png", help="report: the learning curves' figure")
    p.add_argument("--against", help="compare: the run directories to compare --runs-dir's with")
    args = p.parse_args(argv)
    if (args.name == "compare") != (args.against is not None):
        p.error("--against goes with compare, and compare needs it (--against runs/reproduce)")
    start, _ = section_markers(SECTION)
    if args.name == "report" and not (Path(args.out).is_file() and start in Path(args.out).read_text()):
        p.error(f"--out {args.out}: no section {start} ... to rewrite (docs/results.md has it)")
    if args.epochs < 1 or args.eval_samples < 1:
        p.error("--epochs and --eval-samples must be at least 1")
    try:
        check_option("clamp", args.bernoulli_clamp)
    except ConfigError as e:
        p.error(f"--bernoulli-clamp: {e} (the authors' code: 1e-5)")
    return args


def label(name: str, config: RunConfig | None) -> str:
    """``name``, with the likelihood of its run's ``config`` where that is not the exact Bernoulli
    (``--bernoulli-clamp``)."""
    likelihood = "bernoulli" if config is None else config.likelihood
    return name if likelihood == "bernoulli" else f"{name} ({likelihood})"


def rerun(name: str, args: argparse.Namespace) -> str:
    """The command that trains and evaluates the run of configuration ``name`` again, as ``args`` did."""
    command = f"python examples/reproduce.py {name} --runs-dir {args.runs_dir}"
    command += f" --seed {args.seed}" if args.seed else ""
    return command + (f" --bernoulli-clamp {args.bernoulli_clamp!r}" if args.bernoulli_clamp else "")


def describe(device: torch.device) -> str:
    """The device, in words."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"{device} ({platform.machine()}, {torch.get_num_threads()} threads)"


def reproduce(name: str, args: argparse.Namespace) -> dict | None:
    """Train configuration ``name`` in ``args.runs_dir``/NAME (resuming what is there) and evaluate
    it on the test set; returns the summary, or ``None`` with ``--no-eval``."""
    options = dict(epochs=args.epochs, data_root=args.data_root, device=args.device, seed=args.seed)
    config = run_config(name, **options, bernoulli_clamp=args.bernoulli_clamp)
    run_dir = Path(args.runs_dir) / name
    stored = RunConfig.of_run(run_dir)
    differences = {} if stored is None else stored.differences(config)
    changed = {k: v for k, v in differences.items() if k not in MUTABLE}
    if changed:
        listed = ", ".join(f"{k} {new!r} (the run's: {old!r})" for k, (old, new) in changed.items())
        sys.exit(
            f"{run_dir} holds a run that {listed} would change: resume it with its own options "
            "(--seed, --bernoulli-clamp), or give this one a --runs-dir of its own"
        )
    splits = ("train", "valid") if args.no_eval else ("train", "valid", "test")
    data = {split: pyrovae.load(config.dataset, split, root=config.data_root) for split in splits}
    pyro.set_rng_seed(config.seed)
    vae = config.build_vae(EVENT_SHAPE)
    # held through the evaluation: a second process on the same directory stops at once
    with RunDirectory(run_dir, resume=True, overwrite=False, need_bytes=checkpoint_bytes(vae)) as directory:
        result = pyrovae.fit(
            vae,
            data["train"],
            data["valid"],
            **config.fit_options(),
            run_dir=directory,
            config=config.to_dict(),
            device=config.device,
            progress=not args.quiet,
        )
        print(result.summary())
        history = result.history
        epochs = int(history["epoch"].iloc[-1])
        if args.no_eval:
            print(f"{name}: training finished after {epochs} epochs; evaluation left for a later call")
            return None
        path = run_dir / SUMMARY
        if path.is_file():
            summary = json.loads(path.read_text())
            if summary["epochs"] == epochs and summary["test_num_samples"] == args.eval_samples:
                print(f"{name}: already evaluated ({path})")
                if args.ais_images:
                    tightness(name, run_dir, result, data["test"], args)
                return summary
        ll = pyrovae.log_likelihood(
            result.vae.model, result.vae.guide, data["test"], args.eval_samples, seed=config.seed,
            progress=not args.quiet,
        )  # fmt: skip
        print(ll.summary())
        best = result.best_epoch
        summary = {
            "name": name,
            "likelihood": config.likelihood,
            "parameters": sum(p.numel() for p in vae.parameters()),
            "epochs": epochs,
            "max_epochs": config.epochs,
            "stopped_early": result.stopped_early,
            "best_epoch": best,
            "best_valid_loss": None if best is None else float(history["valid_loss"].iloc[best - 1]),
            **{f"test_{key}": value for key, value in ll.to_json_dict().items()},
            "train_seconds": float(history["seconds"].sum()),
            "eval_device": describe(devices.of_model(result.vae) or torch.device("cpu")),
            "torch": torch.__version__,
            "pyro": pyro.__version__,
            "paper_nll": PAPER_NLL[name],
        }
        used = {"which": "best", "epoch": best, "sha256": digest(result.vae.state_dict())}
        # the run directory is held above
        with output_set("reproduce", rerun(name, args), used, {"eval_samples": args.eval_samples}):
            write_text(run_dir / PER_IMAGE, ll.to_dataframe().to_csv())
            write_json(path, summary)
        print(f"{name}: test NLL {ll.nll:.2f} ± {ll.stderr:.2f} nats (the paper: {PAPER_NLL[name]})")
        if args.ais_images:
            tightness(name, run_dir, result, data["test"], args)
        return summary


def tightness(name: str, run_dir: Path, result, test, args: argparse.Namespace) -> dict:
    """How tight the IS estimate is: AIS (``--ais-steps`` steps, 16 chains, from the guide) on
    ``--ais-images`` test images drawn at random, against the IS estimates of the same images
    (``log_px-test.csv``), written to ``ais-subset.json`` in the run. AIS is a stochastic lower bound too, and
    tighter: the mean of AIS - IS is how much IS-K misses of log p(x), at least."""
    path = run_dir / TIGHTNESS
    settings = {"ais_images": args.ais_images, "ais_steps": args.ais_steps, "eval_samples": args.eval_samples}
    epochs = int(result.history["epoch"].iloc[-1])
    if path.is_file():
        done = json.loads(path.read_text())
        if done["epochs"] == epochs and done["settings"] == settings:
            print(f"{name}: AIS on a subset already done ({path})")
            return done
    images = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: args.ais_images]
    x = pyrovae.data.DataSource(test).batch(images)[0]
    vae = result.vae
    ais = pyrovae.ais(
        vae.model, vae.guide, x, num_steps=args.ais_steps, num_chains=16, seed=0, progress=not args.quiet
    )
    is_px = torch.tensor(pd.read_csv(run_dir / PER_IMAGE, index_col=0)["log_px"].to_numpy()[images.numpy()])
    gap = ais.log_px.double() - is_px
    done = {
        "name": name,
        "epochs": epochs,
        "settings": settings,
        "images": images.tolist(),
        "ais_log_px": ais.log_px.tolist(),
        "ais_log_px_se": ais.log_px_se.tolist(),
        "is_log_px": is_px.tolist(),
        "gap_mean": float(gap.mean()),
        "gap_se": float(gap.std() / len(gap) ** 0.5),
        "acceptance": float(ais.acceptance.mean()),
        "ais_seconds": ais.elapsed,
    }
    used = {"which": "best", "epoch": result.best_epoch, "sha256": digest(vae.state_dict())}
    again = f"{rerun(name, args)} --ais-images {args.ais_images} --ais-steps {args.ais_steps}"
    with output_set("reproduce-ais", again, used, settings):
        write_json(path, done)
    print(
        f"{name}: AIS-{args.ais_steps} - IS-{args.eval_samples} on {len(images)} random test images: "
        f"{done['gap_mean']:.2f} ± {done['gap_se']:.2f} nats"
    )
    return done


def evaluation(run_dir: Path, epoch: int) -> dict | None:
    """The test evaluation (``reproduce.json``) of the run in ``run_dir`` if it is of the run as it
    stands after ``epoch`` epochs, else ``None`` (none yet, or the run has trained on since)."""
    path = run_dir / SUMMARY
    summary = json.loads(path.read_text()) if path.is_file() else None
    return summary if summary is not None and summary["epochs"] == epoch else None


#: what :func:`progress_line` and :func:`report` read of a run's checkpoint
PROGRESS_KEYS = ("epoch", "history", "best", "best_epoch", "bad_epochs", "settings")


def progress_line(name: str, run_dir: Path) -> str:
    """How far the run of configuration ``name`` in ``run_dir`` has got, in one line."""
    if not (run_dir / CHECKPOINT).is_file():
        return f"{name}: no epoch finished yet"
    state = read_state(run_dir / CHECKPOINT, PROGRESS_KEYS)
    epoch, settings = state["epoch"], state["settings"]
    patience = settings["patience"]
    if patience is not None and state["bad_epochs"] >= patience:
        status = f"stopped early (no better validation bound in {patience} epochs)"
    elif epoch >= settings["epochs"]:
        status = "reached the most epochs"
    else:
        status = "not finished"
    hours = sum(row["seconds"] for row in state["history"]) / 3600
    best = "no validation bound" if state["best_epoch"] is None else (
        f"best validation -ELBO {state['best']:.2f} at epoch {state['best_epoch']}"
    )  # fmt: skip
    line = f"{name}: epoch {epoch}/{settings['epochs']}, {best}, {status}, {hours:.1f} h of training"
    summary = evaluation(run_dir, epoch)
    if summary is not None:
        line += (
            f"; test NLL {summary['test_nll']:.2f} ± {summary['test_stderr']:.2f} "
            f"(IS-{summary['test_num_samples']}; the paper: {PAPER_NLL[name]})"
        )
    else:
        line += "; not evaluated"
    return line


def progress(runs_dir: Path) -> None:
    """Print :func:`progress_line` for every configuration with a run directory in ``runs_dir``."""
    found = [name for name in CONFIGS if (runs_dir / name).is_dir()]
    if not found:
        print(f"no runs of {', '.join(CONFIGS)} in {runs_dir}")
    for name in found:
        print(progress_line(name, runs_dir / name))


def run_states(runs_dir: Path) -> dict[str, dict]:
    """The checkpoint of each configuration's run in ``runs_dir`` that has finished an epoch, by name:
    read once, for all the tables and figures of :func:`report`."""
    return {
        name: read_state(runs_dir / name / CHECKPOINT, PROGRESS_KEYS)
        for name in CONFIGS
        if (runs_dir / name / CHECKPOINT).is_file()
    }


def report_table(runs_dir: Path, states: dict[str, dict]) -> pd.DataFrame:
    """One row per run of ``states`` (:func:`run_states` of ``runs_dir``), named with its likelihood where
    that is not the exact Bernoulli: the paper's test NLL, ours with its standard error, the estimate it
    comes from as recorded (``IS-K on N images``), the difference, epochs, wall time, evaluation device,
    median ESS and the PSIS k-hat counts; dashes where a run has not been evaluated."""
    rows = []
    for name, state in states.items():
        run_dir = runs_dir / name
        patience = state["settings"]["patience"]
        stopped = patience is not None and state["bad_epochs"] >= patience
        summary = evaluation(run_dir, state["epoch"])
        done = summary is not None
        nan = float("nan")
        nll = summary["test_nll"] if done else nan
        rows.append(
            {
                "configuration": label(name, RunConfig.of_state(state)),
                "paper NLL": PAPER_NLL[name],
                "our NLL": nll,
                "± se": summary["test_stderr"] if done else nan,
                "estimate": (
                    f"IS-{summary['test_num_samples']} on {summary['test_num_data']} images" if done else "—"
                ),
                "ours - paper": nll - PAPER_NLL[name],
                "epochs (best)": f"{state['epoch']} ({state['best_epoch']})",
                "status": "evaluated" if done else ("stopped, not evaluated" if stopped else "not finished"),
                "best valid -ELBO": float(state["best"]),
                "train hours": sum(row["seconds"] for row in state["history"]) / 3600,
                "eval device": summary["eval_device"] if done else "—",
                "AIS - IS": _tightness_cell(run_dir, state["epoch"]),
                "eval s": summary["test_elapsed"] if done else nan,
                "median ESS": summary["test_ess_median"] if done else nan,
                "k-hat <0.5 / 0.5-0.7 / >0.7": (
                    f"{summary['test_khat_below_0_5']} / {summary['test_khat_0_5_to_0_7']} / "
                    f"{summary['test_khat_above_0_7']}"
                    if done
                    else "—"
                ),
            }
        )
    return pd.DataFrame(rows)


#: the paired comparisons of the report: (better, worse) configurations, the first the one with more structure
PAIRS = (
    ("vae-vamp", "vae-standard"),
    ("hvae-vamp", "hvae-standard"),
    ("hvae-standard", "vae-standard"),
    ("hvae-vamp", "vae-vamp"),
)


def paired_difference(first: Path, second: Path, epochs: tuple[int, int]) -> tuple[float, float, int] | None:
    """The test NLL of the run in ``first`` minus that of the run in ``second``, both run directories
    whose checkpoints stand at ``epochs``: the mean of the per-image differences of their
    ``log_px-test.csv`` (negative: the first is better), its paired standard error and the number of
    images; ``None`` unless both runs are evaluated as they stand (:func:`evaluation`), with the same
    number of importance samples, on the same test images (the whole test set, in order)."""
    runs = (first, second)
    summaries = [evaluation(run_dir, epoch) for run_dir, epoch in zip(runs, epochs, strict=True)]
    if None in summaries or len({summary["test_num_samples"] for summary in summaries}) > 1:
        return None
    a, b = (pd.read_csv(run_dir / PER_IMAGE, index_col=0)["log_px"] for run_dir in runs)
    if not a.index.equals(b.index):
        return None
    diff = -(a - b)  # NLL difference per image
    return float(diff.mean()), float(diff.std() / len(diff) ** 0.5), len(diff)


def paired_table(runs_dir: Path, states: dict[str, dict]) -> pd.DataFrame:
    """The NLL differences (:func:`paired_difference`) of :data:`PAIRS` whose runs (of ``states``,
    :func:`run_states` of ``runs_dir``) are both evaluated alike, against the paper's difference; a run
    whose likelihood is not the exact Bernoulli is named with it (:func:`label`)."""
    rows = []
    for first, second in PAIRS:
        if first not in states or second not in states:
            continue
        epochs = (states[first]["epoch"], states[second]["epoch"])
        paired = paired_difference(runs_dir / first, runs_dir / second, epochs)
        if paired is not None:
            labels = (label(name, RunConfig.of_state(states[name])) for name in (first, second))
            rows.append(
                {
                    "comparison": " - ".join(labels),
                    "paper": PAPER_NLL[first] - PAPER_NLL[second],
                    "ours": paired[0],
                    "± paired se": paired[1],
                    "images": paired[2],
                }
            )
    return pd.DataFrame(rows)


def compare_table(runs_dir: Path, against: Path) -> pd.DataFrame:
    """Each configuration with a run in both ``runs_dir`` and ``against`` (say, a variant of the recipe and
    the recipe itself): the best validation -ELBO of each and its epoch, and the paired test NLL
    difference (:func:`paired_difference`, ``runs_dir``'s minus ``against``'s) where both are evaluated
    alike."""
    rows = []
    for name in CONFIGS:
        runs = [directory / name for directory in (runs_dir, against)]
        if not all((run / CHECKPOINT).is_file() for run in runs):
            continue
        states = [read_state(run / CHECKPOINT, ("epoch", "best", "best_epoch")) for run in runs]
        first, second = (label(name, RunConfig.of_state(state)) for state in states)
        paired = paired_difference(*runs, (states[0]["epoch"], states[1]["epoch"]))
        nan = float("nan")
        rows.append(
            {
                "configuration": f"{first} against {second}",
                "best valid -ELBO (epoch)": f"{states[0]['best']:.2f} ({states[0]['best_epoch']})",
                "against": f"{states[1]['best']:.2f} ({states[1]['best_epoch']})",
                "test NLL difference": nan if paired is None else paired[0],
                "± paired se": nan if paired is None else paired[1],
                "images": 0 if paired is None else paired[2],
            }
        )
    return pd.DataFrame(rows)


def _tightness_cell(run_dir: Path, epoch: int) -> str:
    """``ais-subset.json``'s mean AIS - IS gap, as a table cell, or a dash."""
    path = run_dir / TIGHTNESS
    done = json.loads(path.read_text()) if path.is_file() else None
    if done is None or done["epochs"] != epoch:
        return "—"
    settings = done["settings"]
    return (
        f"{done['gap_mean']:.2f} ± {done['gap_se']:.2f} (AIS-{settings['ais_steps']}, "
        f"{settings['ais_images']} images)"
    )


def learning_curves(states: dict[str, dict], path: Path) -> None:
    """The training objective and the validation -ELBO per epoch of every run of ``states``
    (:func:`run_states`), in one figure."""
    fig = figure(figsize=(11, 4.2))
    train_ax, valid_ax = fig.subplots(1, 2)
    for name, state in states.items():
        history = pd.DataFrame(state["history"])
        curve = label(name, RunConfig.of_state(state))
        train_ax.plot(history["epoch"], history["train_loss"], label=curve)
        valid_ax.plot(history["epoch"], history["valid_loss"], label=curve)
    train_ax.set_title("training objective (KL weight rising to 1 over 100 epochs)", fontsize=10)
    valid_ax.set_title("validation -ELBO (KL weight 1): early stopping's criterion", fontsize=10)
    for ax, low, high in ((train_ax, 55, 125), (valid_ax, 88, 110)):
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per image")
        ax.set_ylim(low, high)
        ax.grid(alpha=0.3)
    valid_ax.legend()
    fig.suptitle("VampPrior reproduction on statically binarized MNIST: learning curves")
    fig.tight_layout()
    save(fig, path)


def report(args: argparse.Namespace) -> None:
    """Rewrite the Reproduction table of ``args.out`` and draw the learning curves."""
    runs_dir, out = Path(args.runs_dir), Path(args.out)
    states = run_states(runs_dir)
    table = report_table(runs_dir, states)
    learning_curves(states, Path(args.figure))
    paired = paired_table(runs_dir, states)
    text = markdown(table)
    if len(paired):
        text += "\n\nPaired differences of the test NLL (per image, then averaged; negative: the first is "
        text += "better):\n\n"
        text += markdown(paired)
    replace_section(out, SECTION, text)
    print(text)
    print(f"wrote {out} and {args.figure}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.name == "progress":
        progress(Path(args.runs_dir))
        return
    if args.name == "report":
        report(args)
        return
    if args.name == "compare":
        table = compare_table(Path(args.runs_dir), Path(args.against))
        none = f"no configuration has a run in both {args.runs_dir} and {args.against}"
        print(markdown(table) if len(table) else none)
        return
    try:
        reproduce(args.name, args)
    except PyroVAEError as e:
        sys.exit(f"{args.name}: {e}")
    except KeyboardInterrupt:
        print(
            f"{args.name}: interrupted; {progress_line(args.name, Path(args.runs_dir) / args.name)}. "
            "The same command continues from there.",
            file=sys.stderr,
        )
        sys.exit(130)


if __name__ == "__main__":
    main()
