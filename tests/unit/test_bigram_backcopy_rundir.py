"""The run folder: training removes only what it wrote, refuses a folder of someone else's
files, and names the damaged file of a truncated checkpoint (issue 13)."""

from __future__ import annotations

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.toy.bigram_backcopy import BBTask
from workbench.toy.training import (
    MANIFEST,
    CorruptCheckpointError,
    ResumeError,
    RunFolderError,
    TrainConfig,
    load_run,
    train,
)

TINY = TrainConfig(
    d_model=8,
    d_mlp=8,
    seq_len=8,
    batch_size=2,
    steps=4,
    probe_every=2,
    probe_batch=2,
    snapshot_len=4,
    checkpoint_every=2,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def task() -> BBTask:
    return BBTask.from_text("the cat sat on the mat. a dog ate the hat! " * 30)


def test_a_folder_of_user_files_is_refused_and_left_intact(task, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "data").mkdir()
    for resume in (True, False):
        with pytest.raises(RunFolderError) as err:
            train(TINY, task=task, out_dir=out, progress=False, resume=resume)
        msg = str(err.value)
        assert "not empty and was not written by training" in msg  # what arrived
        assert "notes.txt" in msg and "data" in msg
        assert "new or empty folder" in msg  # what was expected
        assert "another out_dir, or overwrite=True" in msg  # what to do
    assert (out / "notes.txt").read_text() == "my notes" and (out / "data").is_dir()
    assert sorted(p.name for p in out.iterdir()) == ["data", "notes.txt"]
    assert isinstance(err.value, WorkbenchError)


def test_overwrite_writes_the_run_beside_user_files_and_restart_keeps_them(task, tmp_path):
    out = tmp_path / "mixed"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    train(TINY, task=task, out_dir=out, progress=False, overwrite=True)
    assert (out / MANIFEST).is_file() and (out / "checkpoint" / "model.safetensors").is_file()
    # Starting over removes only the run's files; the user's file stays.
    (out / "checkpoint" / "marker").write_text("old run")
    train(TINY, task=task, out_dir=out, progress=False, resume=False)
    assert (out / "notes.txt").read_text() == "my notes"
    assert not (out / "checkpoint" / "marker").exists()
    # A later file of the user's, beside the run, survives a restart too (manifest present).
    (out / "later.txt").write_text("x")
    train(TINY, task=task, out_dir=out, progress=False, resume=False)
    assert (out / "later.txt").read_text() == "x"


def test_an_empty_folder_and_a_run_folder_are_accepted(task, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    first = train(TINY, task=task, out_dir=out, progress=False)
    again = train(TINY, task=task, out_dir=out, progress=False, resume=False)
    torch.testing.assert_close(first.probes["loss"], again.probes["loss"], equal_nan=True)
    assert load_run(out).probes["step"].tolist() == [0, 2, 4]


def test_a_file_as_out_dir_is_refused(task, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(RunFolderError, match="is a file, expected a folder"):
        train(TINY, task=task, out_dir=f, progress=False)
    assert f.read_text() == "x"


@pytest.mark.parametrize("name", ["model.safetensors", "optim.pt"])
def test_a_truncated_checkpoint_file_is_named_with_how_to_recover(task, tmp_path, name):
    out = tmp_path / "run"
    train(TINY, task=task, out_dir=out, progress=False)
    path = out / "checkpoint" / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    longer = TrainConfig(**{**TINY.to_dict(), "steps": 6})
    for call in (
        lambda: train(longer, task=task, out_dir=out, progress=False),
        lambda: load_run(out),
    ):
        with pytest.raises(CorruptCheckpointError) as err:
            call()
        msg = str(err.value)
        assert name in msg and "truncated or damaged" in msg
        assert "resume=False" in msg and f"delete {out}" in msg and "retrain" in msg
        assert isinstance(err.value, ResumeError)
    # The advice works: resume=False starts over and the run resumes from then on.
    train(longer, task=task, out_dir=out, progress=False, resume=False)
    assert load_run(out).probes["step"].iloc[-1] == 6


def test_a_run_folder_of_an_earlier_version_is_still_recognised(task, tmp_path):
    out = tmp_path / "legacy"
    train(TINY, task=task, out_dir=out, progress=False)
    (out / MANIFEST).unlink()  # as written before manifests existed
    train(TINY, task=task, out_dir=out, progress=False, resume=False)  # not refused
    assert (out / MANIFEST).is_file()
