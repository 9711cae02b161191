"""Streaming reductions: progress, atomic cache, resume after an interruption."""

from __future__ import annotations

import pytest
import torch

from tests.models import tiny
from workbench.errors import WorkbenchError
from workbench.tracing import Reducer, stream

DOCS = [f"document number {i} says {'abc' * (i % 4 + 1)}" for i in range(10)]


class NormSum(Reducer):
    """Sum of last-layer residual norms over real tokens, and the token count."""

    def __init__(self, fail_at: int | None = None):
        # _fail_at is a test hook, not an option: private, so it stays out of the cache key
        self.total, self.count, self.seen, self._fail_at = torch.zeros(()), 0, 0, fail_at

    def update(self, cap):
        if self._fail_at is not None and self.seen == self._fail_at:
            raise KeyboardInterrupt("simulated interruption")
        m = cap.tokens.attention_mask.bool()
        self.total = self.total + cap.resid_post[0][m].sum()
        self.count += int(m.sum())
        self.seen += 1

    def state(self):
        return {"total": self.total, "count": self.count, "seen": self.seen}

    def load(self, s):
        self.total, self.count, self.seen = s["total"], s["count"], s["seen"]

    def result(self):
        return float(self.total), self.count


def _run(model, reducer, tmp_path, **kw):
    return stream(
        model,
        DOCS,
        reducer,
        what=["resid_post"],
        layers=[-1],
        batch_size=3,
        cache_dir=tmp_path,
        progress=False,
        transforms={"resid_post": lambda x, layer: x.norm(dim=-1)},
        **kw,
    )


def test_stream_equals_one_big_capture(tmp_path):
    model = tiny("LlamaForCausalLM")
    total, count = _run(model, NormSum(), tmp_path, use_cache=False)
    import workbench as wb

    cap = wb.capture(model, DOCS, ["resid_post"], layers=[-1])
    m = cap.tokens.attention_mask.bool()
    assert count == int(m.sum())
    assert total == pytest.approx(float(cap.resid_post[0].norm(dim=-1)[m].sum()), rel=1e-5)


def test_interrupted_run_resumes_from_cache(tmp_path):
    model = tiny("LlamaForCausalLM")
    expect = _run(model, NormSum(), tmp_path / "clean")
    with pytest.raises(KeyboardInterrupt):
        _run(model, NormSum(fail_at=2), tmp_path / "resume")
    files = list((tmp_path / "resume").glob("*.pt"))
    assert len(files) == 1 and not list((tmp_path / "resume").glob(".*.part"))
    resumed = NormSum()
    got = _run(model, resumed, tmp_path / "resume")
    assert got[1] == expect[1] and got[0] == pytest.approx(expect[0], rel=1e-6)
    # it skipped the two finished batches: only batches 2 and 3 ran in this call
    assert resumed.seen == 4


def test_cache_key_changes_with_settings(tmp_path):
    model = tiny("LlamaForCausalLM")
    _run(model, NormSum(), tmp_path)
    _run(model, NormSum(), tmp_path, settings={"threshold": 0.5})
    assert len(list(tmp_path.glob("*.pt"))) == 2


def test_empty_dataset_is_an_error(tmp_path):
    with pytest.raises(WorkbenchError, match="empty"):
        stream(tiny("LlamaForCausalLM"), [], NormSum(), what=["resid_post"], cache_dir=tmp_path)


class ScaledNormSum(NormSum):
    """NormSum times ``scale``: an option set in the constructor."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def result(self):
        return float(self.total) * self.scale, self.count


def test_cache_key_covers_reducer_options(tmp_path):
    model = tiny("LlamaForCausalLM")
    one = _run(model, ScaledNormSum(1.0), tmp_path)
    three = _run(model, ScaledNormSum(3.0), tmp_path)
    assert three[0] == pytest.approx(3 * one[0], rel=1e-6)


def _reducer_with_update(body: str):
    """A NormSum subclass whose update is compiled from ``body`` (same class name each time)."""
    ns: dict = {}
    exec(  # noqa: S102 - builds two versions of "the same" reducer, as an edited notebook cell would
        "def update(self, cap):\n"
        "    m = cap.tokens.attention_mask.bool()\n"
        f"    self.total = self.total + {body}\n"
        "    self.count += int(m.sum())\n"
        "    self.seen += 1\n",
        {},
        ns,
    )
    return type("Edited", (NormSum,), {"update": ns["update"]})


def test_cache_key_covers_reducer_code(tmp_path):
    """Editing a reducer and re-running must not return the old cached result."""
    model = tiny("LlamaForCausalLM")
    first = _run(model, _reducer_with_update("cap.resid_post[0][m].sum()")(), tmp_path)
    edited = _run(model, _reducer_with_update("2 * cap.resid_post[0][m].sum()")(), tmp_path)
    assert edited[0] == pytest.approx(2 * first[0], rel=1e-6)


def test_cache_key_covers_transforms_and_their_values(tmp_path):
    model = tiny("LlamaForCausalLM")
    kw = dict(what=["resid_post"], layers=[-1], batch_size=3, cache_dir=tmp_path, progress=False)
    norm = stream(
        model, DOCS, NormSum(), transforms={"resid_post": lambda x, _: x.norm(dim=-1)}, **kw
    )
    square = stream(
        model, DOCS, NormSum(), transforms={"resid_post": lambda x, _: x.norm(dim=-1) ** 2}, **kw
    )
    assert square[0] != pytest.approx(norm[0], rel=1e-3)
    outs = []
    for c in (1.0, 5.0):
        outs.append(
            stream(model, DOCS, NormSum(), transforms={"resid_post": lambda x, _, c=c: c * x}, **kw)
        )
    assert outs[1][0] == pytest.approx(5 * outs[0][0], rel=1e-5)


def test_corrupt_cache_file_is_named_not_loaded(tmp_path):
    from workbench.storage import CorruptCacheError

    model = tiny("LlamaForCausalLM")
    with pytest.raises(KeyboardInterrupt):
        _run(model, NormSum(fail_at=2), tmp_path)
    (path,) = tmp_path.glob("*.pt")
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x01  # one flipped bit in the payload
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCacheError, match=path.name) as err:
        _run(model, NormSum(), tmp_path)
    assert "use_cache=False" in str(err.value)
