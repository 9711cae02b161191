"""One table of bad inputs: each gets a named error that says what to do, and changes nothing.

Every row calls the package with one bad input and asserts the exception type and what its
message contains; then a plain forward pass of the tiny model must be bit-identical to one
taken before the row ran, so that no failure leaves state behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import nbformat
import numpy as np
import pytest
import torch

import workbench as wb
from tests.models import tiny
from workbench import cli
from workbench.errors import (
    DeviceUnavailableError,
    DtypeError,
    EmptyPromptError,
    InvalidArgumentError,
    ModelFileError,
    ModelNotFoundError,
    PromptTooLongError,
    PromptTypeError,
    TokenIdError,
    WorkbenchError,
)
from workbench.runner import NotANotebookError, OutputPathError, run_notebook
from workbench.sae.saelens import SAECorruptError, load_sae

ARCH = "tiny:LlamaForCausalLM"


@dataclass
class Ctx:
    model: Any
    tmp: Any
    mp: pytest.MonkeyPatch


@dataclass
class Row:
    id: str
    call: Callable[[Ctx], Any]
    error: type[Exception]
    says: tuple[str, ...]


def _load(name: Any = ARCH, **kw):
    return lambda c: wb.load_model(name, self_test=False, **kw)


def _one_gpu(c: Ctx):
    c.mp.setattr(torch.cuda, "is_available", lambda: True)
    c.mp.setattr(torch.cuda, "device_count", lambda: 1)
    return wb.load_model(ARCH, device="cuda:3", self_test=False)


def _folder(c: Ctx, *files: str):
    folder = c.tmp / "model"
    folder.mkdir()
    for f in files:
        (folder / f).write_text("{}")
    return wb.load_model(folder, self_test=False)


def _gguf_bytes(c: Ctx, data: bytes):
    path = c.tmp / "m.gguf"
    path.write_bytes(data)
    return wb.load_model(path, self_test=False)


def _small_gguf(path) -> bytes:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_context_length(16)
    w.add_tensor("token_embd.weight", np.ones((32, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


def _truncated_gguf(c: Ctx):
    data = _small_gguf(c.tmp / "whole.gguf")
    return _gguf_bytes(c, data[: len(data) - 600])


def _unloadable_gguf(c: Ctx):
    _small_gguf(c.tmp / "whole.gguf")  # well formed, but no model transformers can build
    return wb.load_model(c.tmp / "whole.gguf", self_test=False)


def _saved_sae(c: Ctx, edit: Callable[[dict], Any]):
    from workbench.sae.model import SAE, SAEConfig
    from workbench.sae.saelens import save_sae

    folder = save_sae(SAE(SAEConfig(8, 16, "topk", k=2)), c.tmp / "sae")
    cfg = json.loads((folder / "cfg.json").read_text())
    new = edit(cfg)
    (folder / "cfg.json").write_text(new if isinstance(new, str) else json.dumps(cfg))
    return load_sae(folder)


def _notebook(c: Ctx) -> Any:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("1")]
    path = c.tmp / "n.ipynb"
    nbformat.write(nb, path)
    return path


def _run(c: Ctx, path, out=None):
    return run_notebook(path, {}, out_dir=out or c.tmp / "out").raise_for_error()


def _write(c: Ctx, name: str, text: str):
    (c.tmp / name).write_text(text)
    return c.tmp / name


def _gen(c: Ctx):
    return c.model.tokenize(p for p in ["a", "b"])


ROWS = [
    # -- devices (API); CUDA is absent in these rows, whatever the machine has
    Row("cuda-without-cuda", _load(device="cuda"), DeviceUnavailableError,
        ("asks for a CUDA GPU", "device='cpu'")),
    Row("cuda:0-without-cuda", _load(device="cuda:0"), DeviceUnavailableError,
        ("torch.cuda.is_available() is False",)),
    Row("torch.device-cuda", _load(device=torch.device("cuda")), DeviceUnavailableError,
        ("CUDA",)),
    Row("cuda-index-past-the-gpus", _one_gpu, DeviceUnavailableError,
        ("has 1 CUDA GPU", "cuda:0..cuda:0")),
    Row("device-gpu", _load(device="gpu"), DeviceUnavailableError,
        ("Unknown device 'gpu'", "'cpu', 'cuda'")),
    Row("device-mps-off-a-mac", _load(device="mps"), DeviceUnavailableError, ("MPS",)),
    Row("device-meta", _load(device="meta"), DeviceUnavailableError, ("not supported",)),
    Row("device-int", _load(device=0), DeviceUnavailableError, ("string or torch.device",)),
    # -- dtypes
    Row("dtype-float33", _load(dtype="float33"), DtypeError,
        ("'float33' is not a dtype", "'bfloat16'", "'bf16'")),
    Row("dtype-int8", _load(dtype="int8"), DtypeError,
        ("integer or quantized type", "'float32'")),
    Row("dtype-torch.int8", _load(dtype=torch.int8), DtypeError, ("quantized checkpoint",)),
    Row("dtype-float8", _load(dtype=torch.float8_e4m3fn), DtypeError, ("float16",)),
    Row("dtype-number", _load(dtype=16), DtypeError, ("string or torch.dtype",)),
    Row("dtype-empty", _load(dtype=""), DtypeError, ("Unknown dtype",)),
    # -- model names, folders and GGUF files
    Row("name-int", _load(name=7), ModelNotFoundError, ("string or path", "int")),
    Row("name-empty", _load(name=""), ModelNotFoundError, ("empty string", "None")),
    Row("tiny-unknown-arch", _load(name="tiny:NoSuchForCausalLM"), WorkbenchError,
        ("NoSuchForCausalLM",)),
    Row("folder-without-config", lambda c: _folder(c, "tokenizer.json"), ModelFileError,
        ("no config.json", "tokenizer.json", "save_pretrained")),
    Row("empty-folder", lambda c: _folder(c), ModelFileError, ("holds nothing",)),
    Row("folder-with-a-gguf", lambda c: _folder(c, "w.gguf"), ModelFileError,
        ("load that instead", "w.gguf")),
    Row("gguf-text", lambda c: _gguf_bytes(c, b"hello, not a model"), ModelFileError,
        ("is not a GGUF file", "b'hell'", "download it again")),
    Row("gguf-empty", lambda c: _gguf_bytes(c, b""), ModelFileError,
        ("not a GGUF file", "0 bytes")),
    Row("gguf-html-error-page", lambda c: _gguf_bytes(c, b"<!DOCTYPE html>..."), ModelFileError,
        ("unfinished download",)),
    Row("gguf-truncated", _truncated_gguf, ModelFileError,
        ("truncated or corrupt", "m.gguf", "Download it again")),
    Row("gguf-unsupported", _unloadable_gguf, ModelFileError,
        ("transformers could not load the GGUF file", "whole.gguf")),
    Row("gguf-missing", lambda c: wb.load_model(c.tmp / "no.gguf"), ModelNotFoundError,
        ("does not exist",)),
    # -- token ids
    Row("ids-out-of-vocab", lambda c: c.model.tokenize(torch.tensor([[1, 2, 128]])),
        TokenIdError, ("Token id 128", "position 2", "0..127")),
    Row("ids-huge", lambda c: c.model.tokenize(torch.tensor([10**12])), TokenIdError,
        ("outside the vocabulary",)),
    Row("ids-negative", lambda c: c.model.tokenize(torch.tensor([[3, 4], [5, -1]])),
        TokenIdError, ("Token id -1 (prompt 1, position 1)",)),
    Row("ids-float", lambda c: c.model.tokenize(torch.tensor([[1.0, 2.0]])), TokenIdError,
        ("integer tensor", "torch.float32")),
    Row("ids-half", lambda c: c.model.tokenize(torch.tensor([1.5], dtype=torch.half)),
        TokenIdError, ("torch.float16",)),
    Row("ids-bool", lambda c: c.model.tokenize(torch.tensor([True, False])), TokenIdError,
        ("torch.bool",)),
    Row("ids-3d", lambda c: c.model.tokenize(torch.ones(1, 2, 3, dtype=torch.long)),
        PromptTypeError, ("[seq] or [batch, seq]",)),
    Row("ids-empty", lambda c: c.model.tokenize(torch.zeros(1, 0, dtype=torch.long)),
        EmptyPromptError, ("no tokens",)),
    Row("ids-as-a-list", lambda c: c.model.tokenize([1, 2, 3]), PromptTypeError,
        ("Prompt 0 is a int", "torch.tensor")),
    # -- prompts
    Row("lone-surrogate", lambda c: c.model.tokenize("caf\udce9 au lait"), PromptTypeError,
        ("lone surrogate '\\udce9' at character 3", "encode('utf-8', 'replace')")),
    Row("lone-surrogate-in-batch", lambda c: c.model.tokenize(["fine", "x\ud800"]),
        PromptTypeError, ("Prompt 1 holds a lone surrogate",)),
    Row("generator-of-prompts", _gen, PromptTypeError, ("generator", "list(prompts)")),
    Row("bytes-prompt", lambda c: c.model.tokenize(b"hello"), PromptTypeError,
        ("bytes", ".decode('utf-8')")),
    Row("empty-list", lambda c: c.model.tokenize([]), PromptTypeError, ("an empty list",)),
    Row("dict-prompt", lambda c: c.model.tokenize({"a": 1}), PromptTypeError, ("dict",)),
    Row("none-in-batch", lambda c: c.model.tokenize(["a", None]), PromptTypeError,
        ("Prompt 1 is a NoneType",)),
    Row("whitespace-prompt", lambda c: c.model.tokenize(["a", " \n"]), EmptyPromptError,
        ("Prompt 1 is empty (whitespace only)",)),
    Row("max-length-past-context", lambda c: c.model.tokenize("x" * 300, max_length=20000),
        PromptTooLongError, ("context of 128", "truncate=True")),
    Row("max-length-below-prompt", lambda c: c.model.tokenize("x" * 30, max_length=10),
        PromptTooLongError, ("max_length is 10", "chunks of at most 10")),
    Row("max-length-zero", lambda c: c.model.tokenize("abc", max_length=0),
        InvalidArgumentError, ("positive int", "got 0")),
    Row("max-length-negative", lambda c: c.model.tokenize("abc", max_length=-5, truncate=True),
        InvalidArgumentError, ("got -5",)),
    Row("max-length-string", lambda c: c.model.tokenize("abc", max_length="20"),
        InvalidArgumentError, ("got '20'",)),
    # -- SAE files
    Row("sae-cfg-truncated", lambda c: _saved_sae(c, lambda d: '{"d_in": 8, "d_s'),
        SAECorruptError, ("cfg.json is not valid JSON", "rm -r")),
    Row("sae-cfg-without-d_in", lambda c: _saved_sae(c, lambda d: d.pop("d_in")),
        SAECorruptError, ("has no 'd_in'", "d_model")),
    Row("sae-cfg-d_sae-null", lambda c: _saved_sae(c, lambda d: d.update(d_sae=None)),
        SAECorruptError, ("has no 'd_sae'",)),
    # -- workbench run
    Row("run-a-py-file", lambda c: _run(c, _write(c, "s.py", "print(1)")), NotANotebookError,
        ("Python script", "jupytext")),
    Row("run-a-text-file", lambda c: _run(c, _write(c, "t.ipynb", "hello")), NotANotebookError,
        ("not a Jupyter notebook",)),
    Row("run-json-not-a-notebook", lambda c: _run(c, _write(c, "j.ipynb", "[1, 2]")),
        NotANotebookError, ("notebook JSON",)),
    Row("run-out-is-a-file", lambda c: _run(c, _notebook(c), _write(c, "f.txt", "mine")),
        OutputPathError, ("is a file", "names a folder")),
    Row("run-out-is-the-notebooks-folder", lambda c: _run(c, _notebook(c), c.tmp),
        OutputPathError, ("is the notebook", "would replace it")),
]  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return tiny("LlamaForCausalLM")


def _forward(model) -> torch.Tensor:
    ids = torch.tensor([[1, 5, 9, 2, 7, 3]])
    with torch.no_grad():
        return model.hf(ids).logits.clone()


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gets_a_named_error_and_changes_nothing(row, model, tmp_path, monkeypatch):
    before = _forward(model)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(row.error) as err:
        row.call(Ctx(model, tmp_path, monkeypatch))
    msg = str(err.value)
    for part in row.says:
        assert part in msg, f"{part!r} not in: {msg}"
    assert isinstance(err.value, WorkbenchError), type(err.value).__mro__
    monkeypatch.undo()
    assert torch.equal(_forward(model), before)


def test_the_table_is_long_enough():
    assert len(ROWS) >= 40 and len({r.id for r in ROWS}) == len(ROWS)


# -- what is accepted -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, want",
    [
        ("bf16", torch.bfloat16),
        ("BFloat16", torch.bfloat16),
        ("torch.float16", torch.float16),
        ("fp32", torch.float32),
        ("half", torch.float16),
        (torch.float64, torch.float64),
        ("auto", None),
        (None, None),
    ],
)
def test_dtype_aliases(name, want):
    from workbench.models.loading import resolve_dtype

    assert resolve_dtype(name) is want


def test_a_bf16_load_and_truncation_that_stops_at_the_context(model):
    m = wb.load_model(ARCH, dtype="bf16", self_test=False)
    assert m.dtype == torch.bfloat16
    toks = model.tokenize("x" * 300, max_length=20000, truncate=True)
    assert toks.shape[1] == 128 == model.adapter.max_context
    assert model.tokenize("x" * 300, max_length=50, truncate=True).shape[1] == 50
    ok = model.tokenize(torch.tensor([[0, 127]]))  # both ends of the vocabulary
    assert ok.input_ids.tolist() == [[0, 127]]


# -- the CLI: one message and an exit status, never a traceback ------------------------------

PREDICT = ["predict", "hello", "--model", ARCH]


@pytest.mark.parametrize(
    "argv, code, says",
    [
        (PREDICT + ["-k", "0"], 2, "argument -k: must be at least 1, got 0"),
        (PREDICT + ["-k", "-3"], 2, "must be at least 1"),
        (PREDICT + ["-k", "many"], 2, "expected a whole number, got 'many'"),
        (PREDICT + ["-k", "1000000000000"], 2, "more next tokens than"),
        (PREDICT + ["--device", "cuda"], 2, "asks for a CUDA GPU"),
        (PREDICT + ["--dtype", "float33"], 2, "Unknown dtype"),
        (["predict", "", "--model", ARCH], 2, "Prompt 0 is empty"),
        (["predict", "x", "--model", "/no/such/dir/m.gguf"], 2, "does not exist"),
    ],
    ids=["k0", "k-negative", "k-text", "k-huge", "cuda", "dtype", "empty", "gguf-missing"],
)
def test_cli_bad_input(argv, code, says, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if code == 2 and argv[-2] == "-k" and argv[-1] != "1000000000000":
        with pytest.raises(SystemExit) as exit_:  # argparse's own usage error
            cli.main(argv)
        got = exit_.value.code
    else:
        got = cli.main(argv)
    out = capsys.readouterr()
    assert got == code and says in out.err and "Traceback" not in out.out + out.err
    assert out.out == ""  # nothing half-printed


def test_cli_unexpected_error_is_one_line_and_traceback_is_on_request(capsys, monkeypatch):
    import importlib

    capture = importlib.import_module("workbench.tracing.capture")  # the module, not capture()

    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(capture, "run_with", boom)
    assert cli.main(PREDICT) == 1
    err = capsys.readouterr().err
    assert "error: RuntimeError: boom" in err and "second line" not in err
    assert "--traceback" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["--traceback"] + PREDICT)


def test_cli_predict_prints_k_tokens(capsys):
    assert cli.main(PREDICT + ["-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and "next token after 'hello'" in lines[0]
