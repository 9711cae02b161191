"""Never lose a user's files: ``workbench run`` outputs, SAE folders, the NDIF key, the cache."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import nbformat
import pytest

from workbench import cli
from workbench.runner import (
    NotANotebookError,
    OutputBusyError,
    OutputPathError,
    UnknownParameterError,
    run_notebook,
)


def _notebook(folder, *cells: str, name: str = "x.ipynb", params: str = "n = 3\n"):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell(params)
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p] + [nbformat.v4.new_code_cell(c) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Py", "language": "python"}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    nbformat.write(nb, path)
    return path


def _good_copy(out, name: str = "x.ipynb") -> bytes:
    """A previous good executed copy, as papermill writes it (with its metadata key)."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('the good run')")]
    nb.metadata["papermill"] = {"input_path": "x.ipynb"}
    out.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out / name)
    return (out / name).read_bytes()


# -- workbench run: the output is never the input -------------------------------------------


def test_run_refuses_to_write_over_the_notebook_itself(tmp_path):
    path = _notebook(tmp_path / "results", "print(1)")
    before = path.read_bytes()
    for out in (tmp_path / "results", tmp_path / "results" / ".." / "results"):
        result = run_notebook(path, {}, out_dir=out)
        assert isinstance(result.exception, OutputPathError), result.summary()
        assert "is the notebook" in result.error and "Choose another --out" in result.error
    assert path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["x.ipynb"]


def test_cli_run_with_the_default_out_keeps_a_notebook_in_results(tmp_path, monkeypatch, capsys):
    path = _notebook(tmp_path / "results", "print(1)")
    before = path.read_bytes()
    monkeypatch.chdir(tmp_path)
    code = cli.main(["run", "results/x.ipynb"])  # default --out results
    text = "".join(capsys.readouterr())
    assert code == 1 and "is the notebook" in text and "Traceback" not in text
    assert path.read_bytes() == before


def test_run_refuses_a_symlinked_output_that_is_the_input(tmp_path):
    path = _notebook(tmp_path / "nb", "print(1)")
    (tmp_path / "link").symlink_to(tmp_path / "nb")
    result = run_notebook(path, {}, out_dir=tmp_path / "link")
    assert isinstance(result.exception, OutputPathError)
    assert path.is_file()


# -- workbench run: a failed run never replaces a good copy ---------------------------------


def test_a_mistyped_parameter_leaves_the_good_copy_and_writes_a_failed_one(tmp_path):
    path = _notebook(tmp_path / "nb", "print(n)")
    out = tmp_path / "out"
    good = _good_copy(out)
    result = run_notebook(path, {"nn": "4"}, out_dir=out)
    assert isinstance(result.exception, UnknownParameterError)
    assert (out / "x.ipynb").read_bytes() == good
    assert result.executed_path == out / "x.failed.ipynb"
    assert "Not executed" in nbformat.read(result.executed_path, as_version=4).cells[0].source
    assert result.kept_path == out / "x.ipynb"
    assert f"the last good executed copy is kept: {out / 'x.ipynb'}" in result.summary()
    assert not list(out.glob(".*"))  # no lock, no temporary file left behind
    # a second failure replaces the first failed copy (ours), still not the good one
    result = run_notebook(path, {"m": "4"}, out_dir=out)
    assert "'m'" in nbformat.read(result.executed_path, as_version=4).cells[0].source
    assert (out / "x.ipynb").read_bytes() == good


@pytest.mark.slow
def test_real_runs_rename_on_success_and_keep_the_good_copy_on_failure(tmp_path):
    path = _notebook(tmp_path / "nb", "print('value', n)\nassert n < 10, 'n too big'")
    out = tmp_path / "out"
    ok = run_notebook(path, {"n": "4"}, out_dir=out, progress_bar=False)
    assert ok.ok, ok.summary()
    assert ok.executed_path == out / "x.ipynb" and ok.html_path == out / "x.html"
    good, page = (out / "x.ipynb").read_bytes(), (out / "x.html").read_bytes()
    assert b"value 4" in good
    assert sorted(p.name for p in out.iterdir()) == ["x.html", "x.ipynb"]  # no tmp, no lock

    bad = run_notebook(path, {"n": "40"}, out_dir=out, progress_bar=False)
    assert not bad.ok and "n too big" in bad.error
    assert (out / "x.ipynb").read_bytes() == good and (out / "x.html").read_bytes() == page
    assert bad.executed_path == out / "x.failed.ipynb" and bad.html_path == out / "x.failed.html"
    assert b"value 40" in bad.executed_path.read_bytes()
    assert "last good executed copy is kept" in bad.summary()

    again = run_notebook(path, {"n": "5"}, out_dir=out, progress_bar=False)
    assert again.ok  # the stale failed copies are superseded and removed
    assert sorted(p.name for p in out.iterdir()) == ["x.html", "x.ipynb"]
    assert b"value 5" in (out / "x.ipynb").read_bytes()


# -- workbench run: two runs into one output ------------------------------------------------


def test_a_second_run_into_the_same_output_is_refused_while_the_first_holds_it(tmp_path):
    path = _notebook(tmp_path / "nb", "print(n)")
    out = tmp_path / "out"
    good = _good_copy(out)
    lock = out / ".x.ipynb.lock"
    lock.write_text(f"{os.getppid()}\n")  # a live process that is not us
    result = run_notebook(path, {"nn": "1"}, out_dir=out)
    assert isinstance(result.exception, OutputBusyError)
    assert str(lock) in result.error and f"process {os.getppid()}" in result.error
    assert "delete the lock file" in result.error
    assert (out / "x.ipynb").read_bytes() == good and not (out / "x.failed.ipynb").exists()
    assert lock.read_text() == f"{os.getppid()}\n"  # someone else's lock stays


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    path = _notebook(tmp_path / "nb", "print(n)")
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".x.ipynb.lock").write_text(f"{dead.pid}\n")
    result = run_notebook(path, {"nn": "1"}, out_dir=out)
    assert isinstance(result.exception, UnknownParameterError)  # it got past the lock
    assert not (out / ".x.ipynb.lock").exists()


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    from workbench.runner import _output_lock

    with _output_lock(tmp_path, "x.ipynb") as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(OutputBusyError, match="lock file"):
            with _output_lock(tmp_path, "x.ipynb"):
                pass
    assert not lock.exists()


# -- workbench run: inputs and --out that are not what they should be -----------------------


def test_run_rejects_scripts_non_notebooks_and_folders(tmp_path):
    script = tmp_path / "x.py"
    script.write_text("print(1)\n")
    result = run_notebook(script, {}, out_dir=tmp_path / "out")
    assert isinstance(result.exception, NotANotebookError)
    assert "Python script" in result.error and "jupytext --to ipynb" in result.error
    for text in ("not json at all", '{"a": 1}', ""):
        bad = tmp_path / "bad.ipynb"
        bad.write_text(text)
        result = run_notebook(bad, {}, out_dir=tmp_path / "out")
        assert isinstance(result.exception, NotANotebookError), text
        assert "is not a Jupyter notebook" in result.error and "notebook JSON" in result.error
    result = run_notebook(tmp_path, {}, out_dir=tmp_path / "out")
    assert isinstance(result.exception, NotANotebookError) and "is a folder" in result.error
    assert not (tmp_path / "out").exists()  # nothing is created for a refused run


def test_out_naming_a_file_is_refused_and_the_file_kept(tmp_path, capsys):
    path = _notebook(tmp_path / "nb", "print(n)")
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    result = run_notebook(path, {}, out_dir=target)
    assert isinstance(result.exception, OutputPathError) and "is a file" in result.error
    assert target.read_text() == "mine"
    result = run_notebook(path, {}, out_dir=tmp_path / "new.ipynb")
    assert isinstance(result.exception, OutputPathError) and "looks like a file" in result.error
    assert not (tmp_path / "new.ipynb").exists()
    code = cli.main(["run", str(path), "--out", str(target)])
    text = "".join(capsys.readouterr())
    assert code == 1 and "names a folder" in text and "Traceback" not in text


@pytest.mark.parametrize("name", ["x.ipynb", "x.failed.ipynb", "x.html"])
def test_a_file_at_the_output_path_that_we_did_not_write_is_not_replaced(tmp_path, name):
    path = _notebook(tmp_path / "nb", "print(n)")
    out = tmp_path / "out"
    out.mkdir()
    if name.endswith(".ipynb"):
        mine = nbformat.v4.new_notebook()
        mine.cells = [nbformat.v4.new_markdown_cell("my own notes")]
        nbformat.write(mine, out / name)
    else:
        (out / name).write_text("<html>my page</html>")
    before = (out / name).read_bytes()
    result = run_notebook(path, {"nn": "1"}, out_dir=out)
    assert isinstance(result.exception, OutputPathError)
    assert "was not written by `workbench run`" in result.error and name in result.error
    assert (out / name).read_bytes() == before
    # without HTML, a foreign page is not in the way
    if name == "x.html":
        result = run_notebook(path, {"nn": "1"}, out_dir=out, html=False)
        assert isinstance(result.exception, UnknownParameterError)


def test_export_html_marks_its_pages_and_writes_atomically(tmp_path):
    from workbench.runner import _HTML_MARK, _is_ours, export_html

    out = tmp_path / "out"
    _good_copy(out)
    page = export_html(out / "x.ipynb")
    assert _HTML_MARK in page.read_text() and _is_ours(page)
    assert sorted(p.name for p in out.iterdir()) == ["x.html", "x.ipynb"]
    assert json.loads((out / "x.ipynb").read_text())["metadata"]["papermill"]


def test_workbench_export_writes_a_page_and_never_replaces_a_foreign_file(tmp_path, capsys):
    out = tmp_path / "out"
    _good_copy(out)
    assert cli.main(["export", str(out / "x.ipynb")]) == 0
    assert "x.html" in capsys.readouterr().out and (out / "x.html").is_file()
    assert cli.main(["export", str(out / "x.ipynb")]) == 0  # its own page: replaced
    mine = tmp_path / "mine.html"
    mine.write_text("<p>my notes</p>")
    assert cli.main(["export", str(out / "x.ipynb"), "--out", str(mine)]) != 0
    assert "not replaced" in capsys.readouterr().err and mine.read_text() == "<p>my notes</p>"
    folder = tmp_path / "pages"
    folder.mkdir()
    assert cli.main(["export", str(out / "x.ipynb"), "--out", str(folder)]) == 0
    assert (folder / "x.html").is_file()
    assert cli.main(["export", str(tmp_path / "nope.ipynb")]) != 0
    assert "does not exist" in capsys.readouterr().err


# -- save_sae: never removes what it did not write -------------------------------------------


def _sae(seed: int = 0):
    import torch

    from workbench.sae.model import SAE, SAEConfig

    torch.manual_seed(seed)
    sae = SAE(SAEConfig(12, 40, "topk", k=5, hook_layer=2))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn_like(p))
    return sae


def _same(a, b) -> bool:
    import torch

    return all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


def test_save_sae_refuses_a_folder_holding_a_users_files(tmp_path):
    from workbench.sae.saelens import SAEFolderInUseError, load_sae, save_sae

    folder = tmp_path / "L2"
    folder.mkdir()
    (folder / "notes.md").write_text("my notes")
    with pytest.raises(SAEFolderInUseError) as err:
        save_sae(_sae(), folder)
    msg = str(err.value)
    assert "notes.md" in msg and "overwrite=True" in msg and "Nothing was changed" in msg
    assert sorted(p.name for p in folder.iterdir()) == ["notes.md"]
    # overwrite=True writes our two files and keeps the user's
    save_sae(_sae(), folder, overwrite=True)
    assert (folder / "notes.md").read_text() == "my notes"
    assert _same(load_sae(folder), _sae())


def test_save_sae_replaces_its_own_files_and_keeps_the_rest(tmp_path):
    from workbench.sae.saelens import load_sae, save_sae

    folder = save_sae(_sae(0), tmp_path / "L2")
    assert sorted(p.name for p in folder.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    cfg = json.loads((folder / "cfg.json").read_text())
    assert set(cfg["workbench"]["files"]) == {"cfg.json", "sae_weights.safetensors"}
    (folder / "notes.md").write_text("mine")  # a user's file beside a saved SAE
    save_sae(_sae(1), folder)  # our manifest: no overwrite needed
    assert (folder / "notes.md").read_text() == "mine"
    back = load_sae(folder)
    assert _same(back, _sae(1)) and "files" not in back.cfg.extra
    assert not [p for p in tmp_path.iterdir() if p.name != "L2"]  # no temporary folders left


def test_save_sae_refuses_a_plain_saelens_folder_and_a_file(tmp_path):
    from workbench.sae.saelens import SAEFolderInUseError, save_sae

    folder = tmp_path / "theirs"
    save_sae(_sae(0), folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    del cfg["workbench"]  # as SAELens writes it: no manifest of ours
    (folder / "cfg.json").write_text(json.dumps(cfg))
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(SAEFolderInUseError, match="save_sae did not write"):
        save_sae(_sae(1), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    (tmp_path / "f").write_text("x")
    with pytest.raises(SAEFolderInUseError, match="it is a file"):
        save_sae(_sae(), tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


@pytest.mark.parametrize(
    "damage, says",
    [
        ("truncate weights", "truncated or was replaced"),
        ("garble weights", "could not be read as safetensors"),
        ("truncate cfg", "is not valid JSON"),
        ("drop d_in", "has no 'd_in'"),
        ("d_in text", "'d_in' must be an integer"),
        ("cfg list", "holds a JSON list"),
    ],
)
def test_a_broken_sae_file_is_named_with_how_to_recover(tmp_path, damage, says):
    from workbench.sae.saelens import SAECorruptError, load_sae, save_sae

    folder = save_sae(_sae(), tmp_path / "L2")
    weights, cfg_file = folder / "sae_weights.safetensors", folder / "cfg.json"
    cfg = json.loads(cfg_file.read_text())
    if damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[:-100])
        named = weights
    elif damage == "garble weights":
        size = weights.stat().st_size
        weights.write_bytes(b"\xff" * size)  # same size: only the reader can tell
        named = weights
    else:
        named = cfg_file
        if damage == "truncate cfg":
            cfg_file.write_text(cfg_file.read_text()[:50])
        elif damage == "drop d_in":
            del cfg["d_in"]
            cfg_file.write_text(json.dumps(cfg))
        elif damage == "d_in text":
            cfg["d_in"] = "wide"
            cfg_file.write_text(json.dumps(cfg))
        else:
            cfg_file.write_text("[1, 2]")
    with pytest.raises(SAECorruptError) as err:
        load_sae(folder)
    msg = str(err.value)
    assert says in msg and str(named) in msg and f"rm -r {folder}" in msg
    assert "Traceback" not in msg


# -- the NDIF key stays in memory -----------------------------------------------------------


def test_a_remote_load_never_writes_the_ndif_key_to_disk(tmp_path, monkeypatch):
    from nnsight import CONFIG

    import workbench as wb
    from workbench.errors import ModelNotFoundError

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.delenv("NNSIGHT_CONFIG", raising=False)
    monkeypatch.setenv("NDIF_API_KEY", "secret-ndif-key-123")
    monkeypatch.setattr(CONFIG.API, "APIKEY", None)  # as if nnsight was imported before
    saves = []
    monkeypatch.setattr(type(CONFIG), "save", lambda self: saves.append(self))
    with pytest.raises(ModelNotFoundError, match="remote .NDIF. model"):
        wb.load_model("nobody/no-such-model-xyz", remote=True)
    assert saves == []  # nnsight's config file was never written
    assert [p for p in home.rglob("*") if p.is_file()] == []
    assert CONFIG.API.APIKEY == "secret-ndif-key-123"  # in memory, for this process


# -- disk: the converted model keyed on content, and `workbench cache` -----------------------


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_CACHE", str(root))
    return root


def test_the_converted_copy_is_keyed_on_the_files_content(tmp_path, cache, monkeypatch):
    import hashlib

    from workbench.models import embedded

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 40)
    first = embedded.converted_cache_dir(gguf)
    assert first.parent == cache / "converted"
    assert first.name == f"m-{hashlib.sha256(gguf.read_bytes()).hexdigest()[:16]}"
    # a reinstall: the same bytes, a new mtime -> the same folder, no second copy
    gguf.write_bytes(gguf.read_bytes())
    os.utime(gguf, ns=(10**18, 10**18))
    assert embedded.converted_cache_dir(gguf) == first
    # the hash is remembered by size and mtime: no second read of the file
    monkeypatch.setattr(hashlib, "sha256", lambda *a: pytest.fail("hashed again"))
    assert embedded.converted_cache_dir(gguf) == first
    monkeypatch.undo()
    monkeypatch.setenv("WORKBENCH_CACHE", str(cache))
    # other contents of the same size -> another folder
    gguf.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 40)
    assert embedded.converted_cache_dir(gguf) != first
    # a broken sidecar only costs a re-hash
    (cache / "converted" / embedded.HASHES_FILE).write_text("{not json")
    assert embedded.converted_cache_dir(gguf).parent == cache / "converted"


def test_saving_the_converted_copy_removes_old_layout_copies_only(tmp_path, cache):
    from workbench.models import embedded
    from workbench.models.tiny import tiny_hf_model

    conv = cache / "converted"
    old = conv / "m-1234-5678"  # the earlier <stem>-<size>-<mtime> layout
    other = conv / "other-1234-5678"  # another model's copy
    for d in (old, other):
        d.mkdir(parents=True)
        (d / "model.safetensors").write_bytes(b"x" * 10)
    hf, tok = tiny_hf_model("LlamaForCausalLM")
    target = conv / "m-0123456789abcdef"
    embedded.save_converted(hf, tok, target)
    assert (target / "config.json").is_file()
    assert not old.exists() and other.is_dir()
    assert sorted(p.name for p in conv.iterdir()) == sorted([target.name, other.name])


def _fill(cache):
    for kind, n in (("converted", 3000), ("sae", 200), ("activations", 50)):
        d = cache / kind / f"{kind}-entry"
        d.mkdir(parents=True)
        (d / "data.bin").write_bytes(b"x" * n)


def test_cache_list_shows_folders_with_sizes(cache, capsys):
    _fill(cache)
    (cache / "mine.txt").write_text("a user's file")
    assert cli.main(["cache", "list"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {cache.resolve()}" in out
    assert re.search(r"converted +3\.0 KB +1 entry", out) and "3.0 KB  converted-entry" in out
    assert re.search(r"sae +200 B", out) and re.search(r"stream +0 B +0 entries", out)
    assert "(not the workbench's, left alone) mine.txt" in out
    assert re.search(r"total +3\.2 KB", out)


def test_cache_clear_removes_only_what_was_asked_inside_the_cache(cache, tmp_path, capsys):
    _fill(cache)
    (cache / "mine.txt").write_text("a user's file")
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (cache / "stream").symlink_to(outside)  # a link out of the cache is never followed
    assert cli.main(["cache", "clear", "--what", "sae", "--yes"]) == 0
    assert not (cache / "sae").exists() and (cache / "converted").is_dir()
    # without --yes, and no terminal to ask: refused, nothing removed
    code = cli.main(["cache", "clear"])
    err = capsys.readouterr().err
    assert code == 2 and "add --yes" in err and (cache / "converted").is_dir()
    assert cli.main(["cache", "clear", "--what", "all", "--yes"]) == 0
    assert sorted(p.name for p in cache.iterdir()) == ["mine.txt", "stream"]
    assert (outside / "keep.txt").read_text() == "keep"
    assert cli.main(["cache", "clear", "--what", "sae", "--yes"]) == 0
    assert "Nothing to clear" in capsys.readouterr().out


def test_cache_commands_refuse_a_home_folder_as_the_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    (tmp_path / "sae").mkdir()
    assert cli.main(["cache", "clear", "--yes"]) == 2
    assert "home or root folder" in capsys.readouterr().err and (tmp_path / "sae").is_dir()


def test_atomic_writes_get_a_shareable_mode(tmp_path):
    """Regression: mkstemp's 0600 survived the rename, so shared results were unreadable."""
    import os

    from workbench.storage import atomic_write_text

    umask = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "new.txt", "x")
        assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644
        kept = tmp_path / "kept.txt"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
        assert kept.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(umask)
