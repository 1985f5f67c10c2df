"""Atomic writes, and checkpoints that hold plain data only."""

from __future__ import annotations

import json
import math
import os
import pickle

import pytest
import torch

from pyrovae.errors import CheckpointError
from pyrovae.io import atomic_path, load_checkpoint, save_checkpoint, write_json, write_text


def listing(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_atomic_write_moves_the_file_into_place_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        tmp.write_text("new")
        assert not target.exists()  # nothing at the target until the block succeeds
    assert target.read_text() == "new"
    assert listing(target.parent) == ["out.txt"]


def test_exception_inside_the_block_leaves_no_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="disk on fire"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk on fire")
    assert listing(tmp_path) == []


def test_failed_write_does_not_damage_the_existing_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.txt"]

    with pytest.raises(TypeError):
        write_json(target, {"not json": object()})
    assert target.read_text() == "old"
    assert listing(tmp_path) == ["out.txt"]


def test_failed_checkpoint_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": "pyrovae-checkpoint", "epoch": 1})
    before = path.read_bytes()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_checkpoint(path, {"format": "pyrovae-checkpoint", "epoch": 2, "bad": lambda: None})
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["checkpoint.pt"]
    assert load_checkpoint(path)["epoch"] == 1


def test_write_text_and_json(tmp_path):
    write_text(tmp_path / "a.txt", "hello\n")
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    write_json(tmp_path / "a.json", {"b": [1, 2.5], "a": None})
    assert json.loads((tmp_path / "a.json").read_text()) == {"a": None, "b": [1, 2.5]}
    write_text(tmp_path / "a.txt", "replaced")
    assert (tmp_path / "a.txt").read_text() == "replaced"
    assert listing(tmp_path) == ["a.json", "a.txt"]


def test_checkpoint_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {
        "format": "pyrovae-checkpoint",
        "epoch": 3,
        "model": {"w": torch.randn(3, 4, generator=g), "steps": torch.tensor(7)},
        "history": [{"epoch": 1, "train_loss": 1.5, "valid_loss": math.nan}],
        "best": math.inf,
        "best_epoch": None,
        "config": {"hidden": [32, 16], "likelihood": "bernoulli", "clip_norm": None},
    }
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded.keys() == state.keys()
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    assert torch.equal(loaded["model"]["steps"], state["model"]["steps"])
    assert math.isnan(loaded["history"][0]["valid_loss"])
    assert loaded["history"][0]["train_loss"] == 1.5 and loaded["best"] == math.inf
    assert loaded["best_epoch"] is None and loaded["config"] == state["config"]
    assert listing(tmp_path) == ["checkpoint.pt"]


class Harmless:
    """A class pickled by reference: loading it would import and instantiate arbitrary code."""


class RunsCode:
    """Unpickling this calls ``exec``, which writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("how", ["torch.save", "pickle.dump"])
def test_checkpoint_with_code_in_it_is_refused_without_running_it(tmp_path, how):
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.pt"
    payload = {"format": "pyrovae-checkpoint", "epoch": 1, "evil": RunsCode(marker)}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError, match="pickled") as err:
        load_checkpoint(path)
    assert not marker.exists()
    assert str(path) in str(err.value)
    # the payload is live: an unrestricted load would have run it
    if how == "torch.save":
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.read_text() == "ran"


def test_checkpoint_with_a_pickled_class_is_refused(tmp_path):
    path = tmp_path / "object.pt"
    torch.save({"format": "pyrovae-checkpoint", "evil": Harmless()}, path)
    with pytest.raises(CheckpointError, match="pickled"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "empty", "random-bytes", "text"],
)
def test_damaged_checkpoint_is_a_checkpoint_error(tmp_path, damage):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": "pyrovae-checkpoint", "model": {"w": torch.zeros(100)}})
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "random-bytes":
        path.write_bytes(os.urandom(1) + bytes(range(256)) * 4)
    else:
        path.write_text("hello, this is not a checkpoint\n")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_and_foreign_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing.pt")
    torch.save({"model": {}}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a pyrovae checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a pyrovae checkpoint"):
        load_checkpoint(tmp_path / "list.pt")
