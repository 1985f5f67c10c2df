"""The flags and checks the commands share, each defined once."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.errors import ConfigError

SPLITS = ("train", "valid", "test")


class HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option's line with ``(default: X)`` where that says something: not when
    the default is ``None``, ``False`` or suppressed, nor when the help text already names it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        default = action.default
        if default is None or default is False or default == argparse.SUPPRESS or "default" in help:
            return help
        return f"{help} (default: %(default)s)"


def hidden_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"hidden sizes must be integers separated by commas, not {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive integers, not {text!r}")
    return sizes


def optional(kind):
    def parse(text: str):
        return None if text.lower() in ("none", "null", "") else kind(text)

    return parse


def add_device(p: argparse.ArgumentParser, default: str | None = "auto") -> None:
    p.add_argument(
        "--device",
        default=default,
        help="where to compute: auto (a GPU where there is one, else the CPU), cpu, cuda, cuda:N or mps"
        + ("" if default else " (default: auto, or the run's config.json)"),
    )


def add_backend(p: argparse.ArgumentParser) -> None:
    from pyrovae.distributed import BACKENDS

    p.add_argument(
        "--backend",
        choices=BACKENDS,
        help="torch.distributed backend under torchrun (default: gloo, with nccl for CUDA tensors on GPUs)",
    )


def add_run_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="directory of a `pyrovae train` run")


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        choices=("best", "last"),
        default="best",
        help="parameters to use: the best on the validation data, or the last epoch's",
    )


def add_run_command(sub, name: str, help: str, out: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    add_run_dir(p)
    add_checkpoint(p)
    p.add_argument("--out", metavar="FILE.png", help=f"where to write the figure (default: RUN_DIR/{out})")
    p.add_argument("--overwrite", action="store_true", help="replace the figure if it exists")
    p.add_argument("--seed", type=int, default=0, help="seed of the random draws")
    add_device(p)
    return p


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, not {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, not {text!r}")
    return ks


def default_bounds(num_samples: int) -> list[int]:
    """The powers of ten below ``num_samples``, and ``num_samples``: 1, 10, 100, 300 for 300."""
    ks, k = [], 1
    while k < num_samples:
        ks.append(k)
        k *= 10
    return [*ks, num_samples]


def add_data_source(p: argparse.ArgumentParser, flag: str = "--dataset", root: str = "--data-root") -> None:
    from pyrovae.data.datasets import NAMES

    p.add_argument(flag, choices=NAMES, help="a data set other than the run's (default: the run's)")
    p.add_argument(root, metavar="DIR", help=f"directory with the files of {flag} (default: its own)")


def check_outputs(args: argparse.Namespace, *paths: Path) -> None:
    """Refuse, before anything is computed, to replace an existing output file without --overwrite.

    Each file's directory must be writable (checked by :func:`pyrovae.storage.check_writable`). Rank 0
    alone writes, so under torchrun every rank follows rank 0's view of the files.
    """
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


def out_path(args: argparse.Namespace, default: str) -> Path:
    """The figure's path, --out or ``default`` in the run directory, checked by :func:`check_outputs`."""
    out = Path(args.out) if args.out else Path(args.run_dir) / default
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name, such as {out / default}")
    check_outputs(args, out)
    return out
