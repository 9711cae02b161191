"""The authors' architecture and settings: layer kinds, LayerNorm bias, optimiser
hyper-parameters, the case-sensitive vocabulary and the presets (issue 15)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from workbench.toy.bigram_backcopy import DEFAULT_CHARS, PAPER_CHARS, BBTask
from workbench.toy.model import ToyConfig, ToyConfigError, ToyTransformer, parse_layers
from workbench.toy.training import (
    ARCHITECTURES,
    AUTHORS_ADAMW,
    AUTHORS_SETTINGS,
    AUTHORS_SGD,
    PAPER_AUTHORS_SETTINGS,
    TrainConfig,
    TrainConfigError,
    authors_settings,
    build_model,
    build_optimizer,
    optimizer_variants,
    train,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _parts(model: ToyTransformer) -> list[tuple[bool, bool]]:
    """(has attention, has MLP) per block, with their LayerNorms to match."""
    out = []
    for b in model.blocks:
        assert (b.attn is None) == (b.ln1 is None) and (b.mlp is None) == (b.ln2 is None)
        out.append((b.attn is not None, b.mlp is not None))
    return out


@pytest.mark.parametrize(
    "spec, parts",
    [
        ("TF,TF,TF", [(True, True)] * 3),
        ("TF,TF,MLP", [(True, True), (True, True), (False, True)]),
        ("MLP,TF,MLP", [(False, True), (True, True), (False, True)]),
        ("Attn,TF,MLP", [(True, False), (True, True), (False, True)]),
        ("3xTF", [(True, True)] * 3),
        ("2xTF+MLP", [(True, True), (True, True), (False, True)]),
        ("tf, mlp", [(True, True), (False, True)]),
    ],
)
def test_layers_spec_builds_the_model_it_names(spec, parts):
    cfg = ToyConfig(vocab_size=7, d_model=8, d_mlp=16, max_seq_len=12, layers=spec)
    model = ToyTransformer(cfg)
    assert _parts(model) == parts
    assert cfg.n_layers == len(parts)
    assert parse_layers(cfg.architecture) == parse_layers(spec)  # the canonical spec reads back
    assert model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 7)
    assert ToyConfig.from_dict(cfg.to_dict()) == cfg  # JSON round trip


def test_every_appendix_architecture_builds_and_names_itself():
    assert ARCHITECTURES == ("TF,TF,TF", "TF,TF,MLP", "MLP,TF,MLP", "Attn,TF,MLP")
    for spec in ARCHITECTURES:
        assert TrainConfig(layers=spec).architecture == spec


def test_layers_spec_wins_over_the_layer_fields():
    cfg = TrainConfig(n_layers=1, no_attn_layers=(0,), layers="TF,TF,MLP")
    assert (cfg.n_layers, cfg.no_attn_layers, cfg.no_mlp_layers) == (3, (2,), ())
    assert cfg.model_config(vocab_size=5).architecture == "TF,TF,MLP"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("TF,XX", r"Cannot read layer 'XX' in layers='TF,XX'.*\('TF', 'Attn', 'MLP'\)"),
        ("", r"Cannot read layer ''"),
        ("0xTF", r"Cannot read layer '0xTF'"),
    ],
)
def test_bad_layers_spec_is_refused_with_the_valid_kinds(spec, match):
    with pytest.raises(ToyConfigError, match=match):
        ToyConfig(vocab_size=5, layers=spec)


def test_a_layer_with_nothing_in_it_is_refused():
    with pytest.raises(ToyConfigError, match=r"Layers \[1\] have neither attention nor an MLP"):
        ToyConfig(vocab_size=5, n_layers=2, no_attn_layers=(1,), no_mlp_layers=(1,))


@pytest.mark.parametrize("ln_bias", [False, True])
def test_layernorm_bias_is_an_option(ln_bias):
    model = ToyTransformer(
        ToyConfig(vocab_size=5, d_model=8, d_mlp=8, layers="TF,MLP", ln_bias=ln_bias)
    )
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 4  # ln1 + ln2, ln2, ln_f
    assert all((n.bias is not None) == ln_bias for n in norms)
    names = {n for n, _ in model.named_parameters()}
    assert ("ln_f.bias" in names) == ln_bias
    # The bias is used: changing it changes the output.
    if ln_bias:
        x = torch.randint(0, 5, (1, 6))
        before = model(x)
        with torch.no_grad():
            model.ln_f.bias.add_(1.0)
        assert not torch.allclose(before, model(x))


def test_authors_optimiser_settings_reach_the_optimiser():
    adam = build_optimizer(TrainConfig(**AUTHORS_ADAMW), torch.nn.Linear(2, 2))
    assert isinstance(adam, torch.optim.AdamW)
    g = adam.param_groups[0]
    assert (g["lr"], g["betas"], g["weight_decay"]) == (3e-4, (0.9, 0.99), 1e-4)
    sgd = build_optimizer(TrainConfig(**AUTHORS_SGD), torch.nn.Linear(2, 2))
    assert isinstance(sgd, torch.optim.SGD)
    g = sgd.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"]) == (0.03, 0.9, 1e-4)
    # The project's old default is kept: PyTorch's betas.
    assert build_optimizer(TrainConfig(), torch.nn.Linear(2, 2)).param_groups[0]["betas"] == (
        0.9,
        0.999,
    )


def test_bad_betas_are_refused():
    with pytest.raises(TrainConfigError, match=r"betas must be two numbers in \[0, 1\)"):
        TrainConfig(betas=(0.9, 1.5))


def test_optimizer_variants_are_the_authors_three_runs():
    v = optimizer_variants()
    assert list(v) == ["AdamW", "SGD", "ReLU attn"]
    assert v["AdamW"] == AUTHORS_ADAMW and v["SGD"] == AUTHORS_SGD
    assert v["ReLU attn"] == {**AUTHORS_ADAMW, "attention": "relu"}
    relu = replace(AUTHORS_SETTINGS, **v["ReLU attn"])
    assert relu.attention == "relu" and relu.betas == (0.9, 0.99)


def test_paper_preset_follows_the_authors():
    p = PAPER_AUTHORS_SETTINGS
    assert p.architecture == "TF,TF,TF"
    assert (p.d_model, p.seq_len, p.batch_size, p.steps) == (256, 256, 512, 10_000)
    assert (p.optimizer, p.lr, p.betas, p.weight_decay) == ("adamw", 3e-4, (0.9, 0.99), 1e-4)
    assert p.ln_bias and p.init == "torch" and p.pos_std == 1.0 and p.case_sensitive
    assert p.probe_style == "authors"
    assert authors_settings(True) == p
    cpu = authors_settings(layers="TF,TF,MLP", steps=7, batch_size=None)
    assert (cpu.architecture, cpu.steps, cpu.batch_size) == ("TF,TF,MLP", 7, 32)
    # Only the scale differs between the CPU and the GPU preset.
    scale = {"d_model", "d_mlp", "seq_len", "batch_size", "probe_every", "probe_batch"}
    same = {k for k in p.to_dict() if k not in scale}
    assert {k: getattr(AUTHORS_SETTINGS, k) for k in same} == {k: getattr(p, k) for k in same}


def test_torch_init_with_ln_bias_draws_pytorch_defaults():
    model = build_model(AUTHORS_SETTINGS, vocab_size=64)
    assert 0.8 < float(model.embed.weight.detach().std()) < 1.2  # nn.Embedding: N(0, 1)
    assert 0.8 < float(model.pos.weight.detach().std()) < 1.2
    assert torch.equal(model.ln_f.bias, torch.zeros(64)) and torch.equal(
        model.ln_f.weight, torch.ones(64)
    )


def test_case_sensitive_vocabulary():
    text = "The Cat sat. A cat Sat on THE mat; the end! " * 10
    lower = BBTask.from_text(text)
    cased = BBTask.from_text(text, chars=PAPER_CHARS)
    assert lower.chars == "".join(c for c in DEFAULT_CHARS if c in set(text.lower()))
    assert not any(c.isupper() for c in lower.chars)
    assert {"T", "C", "A", "S", "H", "E"} <= set(cased.chars)
    assert "t" in cased.chars and "T" in cased.chars  # both cases, two tokens
    t, T = cased.chars.index("t"), cased.chars.index("T")
    assert cased.bigram[T, cased.chars.index("h")] > 0  # "Th" counted as upper-case T
    assert cased.bigram[t, cased.chars.index("H")] == 0  # no "tH" in the text
    assert len(PAPER_CHARS) == 65 and len(set(PAPER_CHARS)) == 65


def test_case_sensitive_config_builds_the_cased_task(tmp_path):
    cfg = TrainConfig(
        d_model=8,
        d_mlp=8,
        seq_len=8,
        batch_size=2,
        steps=1,
        probe_batch=2,
        snapshot_len=4,
        case_sensitive=True,
        layers="TF",
    )
    res = train(cfg, progress=False, out_dir=tmp_path / "run")
    assert any(c.isupper() for c in res.task.chars) and any(c.islower() for c in res.task.chars)
    assert res.model.cfg.vocab_size == res.task.vocab_size


def test_bos_excess_table_against_hand_computed_numbers():
    import pandas as pd

    from workbench.toy.probes import bos_excess_table

    a = pd.DataFrame(
        {"step": [10, 0], "bos_resid_norm_1": [9.0, 5.0], "other_resid_norm_1": [4.0, 4.5]}
    )
    b = pd.DataFrame(
        {"step": [0, 10], "bos_resid_norm_1": [3.0, 4.0], "other_resid_norm_1": [3.0, 3.5]}
    )
    t = bos_excess_table({"3xTF": a, "MLP+TF+MLP": b})
    assert t.loc["3xTF", "excess"] == 5.0 and t.loc["3xTF", "excess_at_start"] == 0.5
    assert t.loc["3xTF", "excess_growth"] == 4.5 and t.loc["3xTF", "steps"] == 10
    assert t.loc["MLP+TF+MLP", "excess"] == 0.5 and t.loc["MLP+TF+MLP", "excess_growth"] == 0.5
    with pytest.raises(KeyError, match="no probe column 'bos_resid_norm_2'"):
        bos_excess_table({"x": a}, stream=2)
