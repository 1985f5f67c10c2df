"""``pyrovae export``: a run's model as a portable model folder (:mod:`pyrovae.runs.model_folder`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pyrovae.cli.flags import add_checkpoint, add_command, add_threads


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "export",
        "export a run's model as a portable model folder",
        "Write the model of RUN_DIR into the folder PATH: config.json (the class, what rebuilds it, the "
        "versions of pyrovae and torch), model.safetensors (the parameters, no pickle) and README.md (a "
        "model card: the data, the training recipe, the test figures with their standard errors and "
        "diagnostics, the command that reproduces the run). pyrovae.load_model(PATH) loads it on any machine "
        "with pyrovae, every command that takes RUN_DIR takes PATH, and huggingface_hub.upload_folder "
        "publishes it as it is. PATH must be new or empty; --overwrite replaces a model folder there.",
    )
    p.add_argument("path", metavar="PATH", help="the model folder to write")
    add_checkpoint(p)
    p.add_argument("--overwrite", action="store_true", help="replace the model folder at PATH")
    add_threads(p)


def run(args: argparse.Namespace) -> int:
    from pyrovae.runs.model_folder import check_destination, save_model
    from pyrovae.runs.run import load_run

    path = Path(args.path)
    check_destination(path, args.overwrite)  # before the run is read
    run = load_run(args.run_dir, args.checkpoint)
    save_model(run, path, overwrite=args.overwrite)
    epoch = "" if run.epoch is None else f", epoch {run.epoch}"
    print(
        f"wrote {path}: config.json, model.safetensors and README.md "
        f"({run.checkpoint['which']} parameters{epoch})"
    )
    print(
        f"load it with pyrovae.load_model({str(path)!r}); publish it with "
        f"huggingface_hub.upload_folder(folder_path={str(path)!r}, repo_id=...)"
    )
    return 0
