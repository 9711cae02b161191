"""Function tokens: document-aware windows, per-token losses reused, boundaries left out,
C(k) intervals, SAE fit on the analysed text, and a progress bar that stays in bounds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from tests.models import tiny
from workbench.analysis.function_tokens import (
    CLASSES,
    bipartite,
    build_graph,
    coverage_table,
    fit_warning,
    loss_decomposition,
    packed_windows,
    per_token_losses,
    sae_fit,
    token_losses,
    transition_classes,
)
from workbench.analysis.uncertainty import Bootstrap
from workbench.sae import SAE, SAEConfig, token_windows

DOCS = ["abc, the abc. " * 3, "the cat, the hat. " * 2, "x. y, z. " * 4, "ab, ba. " * 3]


def _fids(model):
    return [model.tokenizer.convert_tokens_to_ids(c) for c in [" ", ",", "."]]


@pytest.mark.parametrize("arch", ["GPT2LMHeadModel", "LlamaForCausalLM"])  # no BOS / BOS
def test_packed_windows_equal_token_windows_and_number_documents(arch):
    model = tiny(arch)
    pw = packed_windows(model, DOCS, length=16, max_tokens=150)
    assert torch.equal(pw.ids, token_windows(model, DOCS, length=16, max_tokens=150))
    flat_ids, flat_doc = pw.ids.reshape(-1), pw.doc.reshape(-1)
    real = flat_doc >= 0
    # every document's tokens appear in order, each followed by the separator
    for d in range(pw.n_docs):
        toks = flat_ids[real & (flat_doc == d)].tolist()
        want = model.tokenizer(DOCS[d], add_special_tokens=False).input_ids + [pw.separator]
        assert toks == want[: len(toks)]
    if model.adapter.adds_bos:
        assert (pw.doc[:, 0] == -1).all()


def test_boundary_predictions_are_left_out_of_every_class():
    model = tiny("GPT2LMHeadModel")
    tl = per_token_losses(model, DOCS, max_tokens=150, length=16, progress=False)
    sep = model.tokenizer.eos_token_id
    # a boundary prediction predicts the separator or is made at it
    assert tl.boundary.any()
    assert ((tl.current == sep) | (tl.next == sep)).eq(tl.boundary).all()
    dec = tl.decompose(_fids(model))
    assert dec.n_boundary == int(tl.boundary.sum())
    assert int(dec.counts.to_numpy().sum()) == int((~tl.boundary).sum())
    # by hand: the windows through the model, the separator's predictions dropped
    windows = token_windows(model, DOCS, length=16, max_tokens=150)
    with torch.no_grad():
        losses = token_losses(model.hf(windows).logits, windows)[:, 1:].reshape(-1)
    mask = torch.zeros(model.adapter.vocab_size, dtype=torch.bool)
    mask[_fids(model)] = True
    cls = transition_classes(windows, mask)[:, 1:].reshape(-1)
    cur, nxt = windows[:, 1:-1].reshape(-1), windows[:, 2:].reshape(-1)
    inside = (cur != sep) & (nxt != sep)
    for i, name in enumerate(CLASSES):
        c, n = name.split("→")
        sel = (cls == i) & inside
        assert int(dec.counts.loc[c, n]) == int(sel.sum())
        if sel.any():
            assert dec.table.loc[c, n] == pytest.approx(float(losses[sel].mean()), rel=1e-5)


def test_per_token_losses_are_computed_once_and_reused(monkeypatch):
    model = tiny("GPT2LMHeadModel")
    tl = per_token_losses(model, DOCS, max_tokens=150, length=16, progress=False)
    calls = []
    monkeypatch.setattr(
        "workbench.analysis.function_tokens.loss.residuals",
        lambda *a, **k: calls.append(1),
    )
    a = tl.decompose(_fids(model))
    b = tl.decompose(_fids(model)[:1])  # another set: no model run
    assert not calls
    assert not a.table.equals(b.table)
    monkeypatch.undo()
    full = loss_decomposition(model, DOCS, _fids(model), max_tokens=150, length=16, progress=False)
    pd.testing.assert_frame_equal(full.table, a.table)


def test_class_intervals_resample_documents_and_are_seeded():
    model = tiny("GPT2LMHeadModel")
    tl = per_token_losses(model, DOCS * 3, max_tokens=600, length=16, progress=False)
    a = tl.decompose(_fids(model), bootstrap=Bootstrap(n_boot=300, seed=1))
    b = tl.decompose(_fids(model), bootstrap=Bootstrap(n_boot=300, seed=1))
    pd.testing.assert_frame_equal(a.intervals, b.intervals)
    iv = a.intervals.dropna(subset=["mean_loss"])
    assert (iv["low"] <= iv["mean_loss"] + 1e-9).all() and (
        iv["mean_loss"] <= iv["high"] + 1e-9
    ).all()
    assert a.n_docs == tl.n_docs > 8
    assert "hardest" in a.hardest() or "highest" in a.hardest()
    assert {"low", "high"} <= set(a.long().columns)


def _tiny_sae(model, layer: int, d_sae: int = 24, k: int = 3, seed: int = 0) -> SAE:
    torch.manual_seed(seed)
    return SAE(SAEConfig(model.d_model, d_sae, "topk", k=k, hook_layer=layer)).eval()


def test_per_document_feature_sets_add_up_to_the_graph(monkeypatch):
    model = tiny("LlamaForCausalLM")
    saes = {1: _tiny_sae(model, 1)}
    seen = {}

    class Bar:
        def __init__(self, total=None, **_):
            self.total, self.n = total, 0
            seen["bar"] = self

        def update(self, k):
            self.n += k

        def close(self):
            pass

    monkeypatch.setattr(bipartite, "tqdm", Bar)
    graphs = build_graph(model, saes, DOCS * 2, max_tokens=100, length=16, batch_size=2)
    assert seen["bar"].n == seen["bar"].total  # whole windows: the bar ends at its total
    g = graphs[1]
    assert g.n_docs >= 2 and g.tracked.numel() == 10
    n_bytes = g.bits.shape[1]
    for slot, t in enumerate(g.tracked.tolist()):
        union = np.bitwise_or.reduce(g.doc_bits[:, slot].numpy(), axis=0)
        assert np.array_equal(union, g.bits[t].numpy()), t
    fired = np.bitwise_or.reduce(g.doc_fired.numpy(), axis=0)
    assert int(bipartite._popcount(fired)) == int(g.fired.sum()) and fired.shape == (n_bytes,)
    cov = g.coverage_intervals(n_splits=50)
    assert (cov["pct_all_low"] <= cov["pct_all"]).all()
    assert (cov["pct_all"] <= cov["pct_all_high"]).all()
    table = coverage_table(graphs, k_max=5, order=g.tracked[:5].tolist())
    assert {"L1 % all low", "L1 % all high"} <= set(table.columns)


def test_sae_fit_on_analysed_text_and_the_poor_fit_warning():
    model = tiny("LlamaForCausalLM")
    fit = sae_fit(model, {1: _tiny_sae(model, 1)}, DOCS, n_tokens=60, length=16, progress=False)
    assert list(fit.index) == [1]
    assert {"fvu", "l0", "dead", "dead_fraction", "poor_fit"} <= set(fit.columns)
    assert fit.loc[1, "poor_fit"] == (fit.loc[1, "fvu"] > 0.5)
    table = pd.DataFrame({"fvu": [0.2, 0.8]}, index=pd.Index([6, 14], name="layer"))
    msg = fit_warning(table)
    assert "layer 14 (FVU 0.80)" in msg and "layer 6" not in msg
    assert fit_warning(table.assign(fvu=[0.1, 0.2])) == ""
