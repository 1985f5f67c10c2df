"""The model card of a model folder: its ``README.md``, written from its ``config.json``
(:mod:`pyrovae.runs.model_folder`).

The card begins with the front matter the Hugging Face Hub reads (``library_name: pyrovae`` and tags), then
says what the model is, the data it was trained on, the model and its training recipe, the evaluation
figures of its run with their standard errors and diagnostics, the command that reproduces the run, how to
load the model, and the files with the weights' SHA-256.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
from typing import Any

from pyrovae.runs.run import RunConfig

__all__ = ["model_card", "train_command"]

#: options of a run that say where it ran, not what it is: left out of the command that reproduces it
MACHINE = ("device", "data_root", "download")
#: options the reproducing command always names, whatever their defaults
ALWAYS = ("dataset", "model", "epochs", "seed")


def model_card(config: dict[str, Any]) -> str:
    """The ``README.md`` of the model folder whose ``config.json`` is ``config``."""
    options = config.get("options")
    run = config.get("run") or {}
    name = config["class"].rpartition(":")[2]
    dataset = (options or {}).get("dataset")
    tags = ["pyrovae", "pyro", "variational-autoencoder", name.lower(), *([dataset] if dataset else [])]
    lines = ["---", "library_name: pyrovae", "tags:", *[f"- {tag}" for tag in tags], "---", ""]
    lines += [f"# {name}{f' on {dataset}' if dataset else ''}", ""]
    origin = (
        f"exported from a run directory (the {run['checkpoint']['which']} parameters, epoch {run['epoch']})"
        if run and run.get("checkpoint")
        else "saved from Python"
    )
    lines += [
        f"A `{config['class']}` of pyrovae {config['pyrovae_version']} "
        f"(torch {config['torch_version']}), {origin}. One data point has the shape "
        f"{tuple(config['event_shape'] or ())}.",
        "",
        "## Data",
        "",
        _data(options),
        "",
        "## Model and training recipe",
        "",
    ]
    if options is not None:
        lines += ["| option | value |", "|--------|-------|"]
        lines += [f"| `{key}` | `{_value(value)}` |" for key, value in options.items() if key not in MACHINE]
    else:
        lines += [f"Rebuilt as `{name}(**arguments)`, with the arguments of `config.json`:", ""]
        lines += ["| argument | value |", "|----------|-------|"]
        lines += [f"| `{key}` | `{_value(value)}` |" for key, value in config["arguments"].items()]
    lines += ["", "## Evaluation", "", *_evaluation(run.get("results")), ""]
    command = train_command(options, run.get("results")) if run and options and dataset else None
    if command:
        which = run["checkpoint"]["which"]
        lines += ["## Reproduce", "", f"With pyrovae {config['pyrovae_version']}:", "", "```bash", command]
        lines += [
            f"pyrovae export runs/model model{' --checkpoint last' if which == 'last' else ''}",
            "```",
            "",
        ]
    lines += [
        "## Use",
        "",
        "```python",
        "import pyrovae",
        "",
        'vae = pyrovae.load_model("path/to/this/folder")  # checks the files, the class and the versions',
        "```",
        "",
        "`pyrovae evaluate`, `sample`, `latents` and the other commands take this folder in place of a run "
        "directory; they write their files into `FOLDER-outputs` beside it. From the Hugging Face Hub: "
        '`pyrovae.load_model(huggingface_hub.snapshot_download("OWNER/NAME"))`.',
        "",
        "## Files",
        "",
        "- `config.json`: the class, what rebuilds it, the versions that wrote it and the tensors' shapes;",
        f"- `model.safetensors`: the parameters (no pickle), SHA-256 `{config['sha256']}`;",
        "- `README.md`: this card.",
        "",
    ]
    return "\n".join(lines)


def _data(options: dict | None) -> str:
    if options is None or options.get("dataset") is None:
        return "Data of its own, given from Python (the folder names no data set)."
    config = RunConfig.from_dict(options)
    binarize = config.binarize_mode()
    return (
        f'The `{config.dataset}` data set of pyrovae (`pyrovae.load("{config.dataset}", split)`), '
        f"{f'binarized ({binarize})' if binarize else 'not binarized'}, under the likelihood "
        f"`{config.likelihood_spec()}`: trained on its train split, the parameters of the best bound on its "
        "valid split kept, evaluated on its test split."
    )


def _evaluation(results: dict | None) -> list[str]:
    """The test figures of ``results.json``, in nats per data point, with their standard errors and the
    importance sampler's diagnostics."""
    if not results:
        return ["No evaluation was recorded with the model (`pyrovae evaluate FOLDER` makes one)."]
    size = results.get("test_size")
    lines = [f"On the test split{f' ({size} data points)' if size else ''}, in nats per data point:", ""]
    lines += ["| figure | value |", "|--------|-------|"]
    if "epochs" in results:
        lines.append(f"| epochs trained | {results['epochs']} |")
    if "test_negative_elbo" in results:
        lines.append(f"| negative ELBO | {_number(results['test_negative_elbo'])} |")
    ll = results.get("test_log_likelihood")
    if ll:
        k = ll.get("num_samples")
        lines += [
            f"| log p(x), importance sampled (K = {k}) | {_number(ll.get('mean_log_px'))} ± "
            f"{_number(ll.get('stderr'))} |",
            f"| negative log-likelihood | {_number(ll.get('nll'))} ± {_number(ll.get('stderr'))} |",
            f"| effective sample size, median (min) | {_number(ll.get('ess_median'), 1)} "
            f"({_number(ll.get('ess_min'), 1)}) of {k} |",
            f"| PSIS k̂ < 0.5 / 0.5–0.7 / > 0.7 | {ll.get('khat_below_0_5')} / {ll.get('khat_0_5_to_0_7')} / "
            f"{ll.get('khat_above_0_7')} data points |",
        ]
        if ll.get("verdict"):
            lines += ["", " ".join(str(ll["verdict"]).split())]
    return lines


def _number(value, digits: int = 3) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "n/a"
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def _value(value) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def train_command(options: dict[str, Any], results: dict | None = None) -> str:
    """The ``pyrovae train`` command line of the run whose configuration is ``options``: the options that
    differ from their defaults and those of :data:`ALWAYS` (not those of :data:`MACHINE`), and
    ``--test-samples`` as its final evaluation used, into ``--run-dir runs/model``."""
    defaults = RunConfig()
    words = ["pyrovae", "train"]
    for f in dataclasses.fields(RunConfig):
        value = options.get(f.name, getattr(defaults, f.name))
        if f.name in MACHINE or (value == getattr(defaults, f.name) and f.name not in ALWAYS):
            continue
        words += [f"--{f.name.replace('_', '-')}", _value(value)]
    ll = (results or {}).get("test_log_likelihood")
    if results is not None:
        words += ["--test-samples", str(ll.get("num_samples", 0) if ll else 0)]
    return shlex.join([*words, "--run-dir", "runs/model"])
