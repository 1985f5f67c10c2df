"""Atomic writes, and checkpoints that hold plain data only."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle

import pytest
import torch

from pyrovae import storage
from pyrovae.errors import CheckpointError, RunDirError, StorageError
from pyrovae.storage import (
    atomic_path,
    check_writable,
    digest,
    load_checkpoint,
    remove_temporaries,
    save_checkpoint,
    write_json,
    write_text,
)


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


def test_a_checkpoint_whose_contents_were_altered_fails_its_checksum(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"format": "pyrovae-checkpoint", "version": 2, "model": {"w": torch.zeros(3)}})
    assert load_checkpoint(path)["model"]["w"].tolist() == [0, 0, 0]
    state = torch.load(path, weights_only=True)
    state["model"]["w"][1] = 1.0  # a well-formed file with other contents than were written
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="does not match its checksum"):
        load_checkpoint(path)
    del state["sha256"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="carries no checksum"):
        load_checkpoint(path)


def test_digest_depends_on_contents_not_on_order():
    a = {"x": torch.arange(3.0), "y": [1, "a", None, math.nan]}
    b = {"y": [1, "a", None, math.nan], "x": torch.arange(3.0)}
    assert digest(a) == digest(b)
    assert digest(a) != digest({**a, "x": torch.arange(3.0).double()})
    assert digest(a) != digest({**a, "x": torch.tensor([0.0, 1.0, 2.5])})


def test_a_failed_write_is_a_storage_error_that_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    write_text(path, "old")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(
        StorageError, match=r"No space left on device \(is the disk full\?\); the file that was"
    ):
        with atomic_path(path) as tmp:
            full(tmp)
    assert path.read_text() == "old" and listing(tmp_path) == ["out.txt"]
    assert StorageError("x").exit_code == 1


def test_temporaries_of_killed_writes_are_removed(tmp_path):
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"half")
    (tmp_path / "keep.tmp").write_text("not ours")
    (tmp_path / ".hidden").write_text("not ours")
    removed = remove_temporaries(tmp_path)
    assert [p.name for p in removed] == [".checkpoint.pt.abc123.tmp"]
    assert listing(tmp_path) == [".hidden", "keep.tmp"]


def test_check_writable_names_the_problem(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="lies under .*, a file, not a directory"):
        check_writable(tmp_path / "file" / "run")
    check_writable(tmp_path / "new" / "deeper")  # created later, under a directory that is writable
    with pytest.raises(RunDirError, match="MiB free, and this run needs about"):
        check_writable(tmp_path, need_bytes=2**62)

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(storage.tempfile, "TemporaryFile", read_only)
    with pytest.raises(RunDirError, match="cannot write to .*Read-only file system; choose a directory"):
        check_writable(tmp_path / "run")
