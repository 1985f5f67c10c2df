"""The flags and checks the commands share, each defined once."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

from pyrovae.errors import ConfigError

SPLITS = ("train", "valid", "test")
DEVICE = "where to compute: auto (a GPU where there is one, else the CPU), cpu, cuda, cuda:N or mps"
PRECISION = (
    "arithmetic: full float32 (highest), the float32 matrix products in TensorFloat-32 on a GPU that has it "
    "(tf32), or the networks' products in bfloat16 and the log-densities in float32 (bf16)"
)


class HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option's line with ``(default: X)`` where that says something: not when
    the default is ``None``, ``False`` or suppressed, nor when the help text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or "default" in help:
            return help
        return f"{help} (default: %(default)s)"


def positive_ints(must: str):
    """The parser of positive integers separated by commas, its errors beginning with ``must``."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{must} integers separated by commas, not {text!r}") from None
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{must} positive integers, not {text!r}")
        return values

    return parse


hidden_sizes = positive_ints("hidden sizes must be")


def optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    return parse


def add_device(p: argparse.ArgumentParser) -> None:
    """--device, and --threads: what to compute with."""
    p.add_argument("--device", default="auto", help=DEVICE)
    add_threads(p)


def threads(text: str) -> int | str:
    """The value of --threads: ``auto`` or a number."""
    return text if text == "auto" else int(text)


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=threads,
        default="auto",
        help="CPU threads: auto (the idle cores less one; OMP_NUM_THREADS if set) or N",
    )


def add_backend(p: argparse.ArgumentParser) -> None:
    from pyrovae.distributed import BACKENDS

    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="torch.distributed backend under torchrun (default: gloo, with nccl for CUDA tensors on GPUs)",
    )


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="parameters to use: the best on the validation data, or the last epoch's",
    )


def add_command(sub, name: str, help: str, description: str | None = None, run_dir: bool = True):
    """The parser of ``pyrovae NAME`` (described by ``help`` unless ``description`` is given), with
    the positional RUN_DIR unless ``run_dir`` is false."""
    p = sub.add_parser(name, help=help, description=description or help, formatter_class=HelpFormatter)
    if run_dir:
        p.add_argument(
            "run_dir",
            metavar="RUN_DIR",
            help="directory of a `pyrovae train` run, or a model folder of `pyrovae export` (whose outputs "
            "go into FOLDER-outputs beside it)",
        )
    return p


def add_common(p: argparse.ArgumentParser, seed: str, backend: bool = False) -> None:
    """The options that end an analysis of a run: --checkpoint, --seed (``seed`` says of what),
    --no-progress, --overwrite, --backend (if ``backend``) and --device."""
    add_checkpoint(p)
    p.add_argument("--seed", type=int, default=0, help=seed)
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--overwrite", action="store_true", help="replace the output files that exist")
    if backend:
        add_backend(p)
    add_device(p)


def add_limit(p: argparse.ArgumentParser, help: str) -> None:
    """--limit N: a random subset of N data points of the split."""
    p.add_argument("--limit", type=int, metavar="N", help=help)


def add_precision(p: argparse.ArgumentParser) -> None:
    """--precision: the arithmetic of an analysis (:mod:`pyrovae.precision`)."""
    from pyrovae.precision import PRECISIONS

    p.add_argument("--precision", choices=PRECISIONS, default="highest", help=PRECISION)


def add_scoring(p: argparse.ArgumentParser) -> None:
    """The options of anomaly scoring that ``score`` and ``detect`` share."""
    p.add_argument("--split", choices=SPLITS, default="test", help="the split scored")
    p.add_argument("--num-samples", type=int, default=1000, help="importance samples K per data point")
    add_limit(p, "score N data points drawn at random (default: the whole split)")
    p.add_argument(
        "--background",
        metavar="RUN_DIR",
        help="run of the background model, for likelihood-ratio (the same architecture trained on "
        "perturbed inputs)",
    )
    p.add_argument(
        "--group-size", type=int, default=10, help="inputs per group of the typicality test (default: 10)"
    )
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per input of likelihood-regret")
    add_precision(p)
    p.add_argument(
        "--binarize",
        choices=("dynamic", "threshold", "none"),
        help="how another data set than the run's is binarized (default: as the run's data were: its own "
        "binarization when the run's data are binary, a fixed Bernoulli draw for valid and test)",
    )
    add_common(p, "seed of the draws and of --limit")


def check_flags(args: argparse.Namespace, *names: str) -> None:
    """Refuse a flag of ``names`` (given) below 1, then a seed out of its domain."""
    from pyrovae.options import check_option

    for name in names:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1")
    check_option("seed", args.seed)


def names(args: argparse.Namespace, flag: str, what: str) -> list[str]:
    """The comma-separated names of ``--FLAG``: at least one, each once."""
    text = getattr(args, flag)
    listed = [name.strip() for name in text.split(",") if name.strip()]
    if not listed or len(set(listed)) != len(listed):
        raise ConfigError(f"--{flag} must name at least one {what}, each once; got {text!r}")
    return listed


def parse_ks(text: str) -> list[int]:
    return sorted(set(positive_ints("expected")(text)))


def default_bounds(num_samples: int) -> list[int]:
    """The powers of ten below ``num_samples``, and ``num_samples``: 1, 10, 100, 300 for 300."""
    return [k for k in (10**i for i in range(len(str(num_samples)))) if k < num_samples] + [num_samples]


def add_data_source(
    p: argparse.ArgumentParser, flag="--dataset", root="--data-root", help=None, required=False
):
    """A data set (by default another than the run's) and the directory of its files."""
    from pyrovae.data.datasets import NAMES

    help = help or "a data set other than the run's (default: the run's)"
    p.add_argument(flag, choices=NAMES, required=required, help=help)
    p.add_argument(root, metavar="DIR", help=f"directory with the files of {flag} (default: its own)")


def check_outputs(args: argparse.Namespace, *paths: Path) -> None:
    """Refuse, before anything is computed, to replace an existing output file without --overwrite. Each
    file's directory must be writable (checked by :func:`pyrovae.storage.check_writable`). Rank 0 alone
    writes, so under torchrun every rank follows rank 0's view of the files."""
    from pyrovae import distributed
    from pyrovae.storage import check_writable

    for directory in {path.parent for path in paths}:
        check_writable(directory)
    if args.overwrite:
        return
    existing = distributed.broadcast_object([str(path) for path in paths if path.exists()])
    if existing:
        it, exists = ("it", "exists") if len(existing) == 1 else ("them", "exist")
        other = "choose another --out" if args.command in ("sample", "reconstruct") else f"remove {it}"
        raise ConfigError(f"{', '.join(existing)} {exists}; pass --overwrite to replace {it}, or {other}")


def summary(args: argparse.Namespace, run, **results) -> dict:
    """An analysis's JSON summary: what it analysed (the data set and split, the checkpoint and its
    epoch, the seed, --limit and the device), then ``results``."""
    analysed = {key: getattr(args, key) for key in ("split", "checkpoint", "seed", "limit")}
    dataset = getattr(args, "dataset", None) or run.config.dataset
    return {"dataset": dataset, **analysed, "epoch": run.epoch, "device": str(run.vae_device), **results}


def output_dir(args: argparse.Namespace) -> Path:
    """Where the command writes its files: into RUN_DIR; for a model folder, into ``FOLDER-outputs`` beside
    it, for a model folder is what its author published, and nothing is added to it."""
    from pyrovae.runs.model_folder import is_model_folder

    run_dir = Path(args.run_dir)
    if is_model_folder(run_dir):
        folder = run_dir.resolve()
        return folder.with_name(f"{folder.name}-outputs")
    return run_dir


@contextlib.contextmanager
def output_set(args: argparse.Namespace, run, name: str, results: dict | None = None):
    """The context in which this command writes its output set ``name`` (committed as one by
    :func:`pyrovae.runs.outputs.output_set`), recording ``run``'s parameters and the command's options;
    once committed, ``results`` (its JSON summary) and its figures are logged to the run's trackers
    (:func:`pyrovae.tracking.log_results`)."""
    from pyrovae.runs.outputs import output_set as commit
    from pyrovae.runs.outputs import set_files
    from pyrovae.tracking import log_results

    with commit(name, f"pyrovae {args.command} {args.run_dir}", run.checkpoint, args):
        yield
    log_results(run.path, name, results or {}, set_files(run.path, name), run.epoch)


def out_path(args: argparse.Namespace, default: str) -> Path:
    """The figure's path, --out or ``default`` in the :func:`output_dir`, checked by :func:`check_outputs`, in
    a format its suffix names (:func:`pyrovae.plots.figures.file_format`)."""
    from pyrovae.plots.figures import file_format

    out = Path(args.out) if args.out else output_dir(args) / default
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name, such as {out / default}")
    file_format(out)
    check_outputs(args, out)
    return out
