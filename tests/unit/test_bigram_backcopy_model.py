"""The toy transformer: attention maths, variants, nnsight wrapping and bad settings."""

from __future__ import annotations

import math

import nnsight
import pytest
import torch

from workbench.toy.model import ToyConfig, ToyConfigError, ToyTransformer
from workbench.toy.training import TrainConfig, TrainConfigError


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _model(**kw) -> ToyTransformer:
    cfg = dict(vocab_size=7, n_layers=1, d_model=8, d_mlp=16, max_seq_len=12)
    cfg.update(kw)
    return ToyTransformer(ToyConfig(**cfg))


def _pattern(model: ToyTransformer, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
    nm = nnsight.NNsight(model)
    with torch.no_grad(), nm.trace(x):
        p = nm.blocks[layer].attn.probs.output.save()
    return p


def _scores(model: ToyTransformer, x: torch.Tensor) -> torch.Tensor:
    """Plain-torch q.k/sqrt(d) of layer 0, ``[B, T, T]``."""
    with torch.no_grad():
        h = model.embed(x) + model.pos.weight[: x.shape[1]]
        a = model.blocks[0].attn
        z = model.blocks[0].ln1(h)
        return a.q_proj(z) @ a.k_proj(z).transpose(1, 2) / math.sqrt(z.shape[-1])


def test_relu_attention_is_relu_logits_over_visible_keys():
    model = _model(attention="relu")
    for w in model.parameters():  # bigger weights: many logits on both sides of 0
        w.data.normal_(0, 1.0)
    x = torch.randint(0, 7, (3, 10))
    p = _pattern(model, x)
    s = _scores(model, x)
    t = x.shape[1]
    expected = torch.zeros_like(s)
    for i in range(t):
        expected[:, i, : i + 1] = s[:, i, : i + 1].clamp_min(0) / (i + 1)
    torch.testing.assert_close(p, expected)
    assert (p[:, torch.ones(t, t).triu(1).bool()] == 0).all()  # causal
    assert (s < 0).any() and (s > 0).any()
    assert not torch.allclose(p.sum(-1), torch.ones(3, t))  # not renormalised to 1


def test_relu_attention_can_output_zero():
    model = _model(attention="relu")
    a = model.blocks[0].attn
    a.q_proj.weight.data = torch.eye(8)
    a.k_proj.weight.data = -torch.eye(8)  # q.k = -|z|^2 < 0 on the diagonal ...
    x = torch.zeros(1, 5, dtype=torch.long)
    model.pos.weight.data.zero_()  # ... and every token identical: all logits negative
    p = _pattern(model, x)
    assert torch.count_nonzero(p) == 0


def test_softmax_rows_sum_to_one_and_are_causal():
    model = _model()
    x = torch.randint(0, 7, (2, 12))
    p = _pattern(model, x)
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 12))
    assert (p.triu(1) == 0).all()
    torch.testing.assert_close(
        p,
        _scores(model, x)
        .masked_fill(~torch.ones(12, 12, dtype=torch.bool).tril(), float("-inf"))
        .softmax(-1),
    )


def test_layers_can_drop_attention_or_mlp():
    model = _model(n_layers=3, no_attn_layers=(0, 2), no_mlp_layers=(1,))
    b = model.blocks
    assert b[0].attn is None and b[0].mlp is not None
    assert b[1].attn is not None and b[1].mlp is None
    assert b[2].attn is None and b[2].mlp is not None
    assert model(torch.zeros(2, 5, dtype=torch.long)).shape == (2, 5, 7)
    # With no attention anywhere, each position only sees itself.
    m = _model(n_layers=2, no_attn_layers=(0, 1))
    x = torch.randint(0, 7, (1, 8))
    y = x.clone()
    y[0, 0] = (y[0, 0] + 1) % 7
    torch.testing.assert_close(m(x)[0, 1:], m(y)[0, 1:])


def test_no_biases_anywhere():
    model = _model(n_layers=2)
    names = [n for n, _ in model.named_parameters()]
    assert not [n for n in names if n.endswith("bias")], names


def test_nnsight_capture_and_intervention_match_plain_torch():
    model = _model(n_layers=2)
    x = torch.randint(0, 7, (2, 9))
    ref = model(x).detach()
    nm = nnsight.NNsight(model)
    with torch.no_grad(), nm.trace(x):
        nm.blocks[0].mlp.output = torch.zeros_like(nm.blocks[0].mlp.output)
        out = nm.output.save()
    # Reference "No MLP L0" by hand.
    with torch.no_grad():
        h = model.embed(x) + model.pos.weight[:9]
        b0, b1 = model.blocks
        h = h + b0.attn(b0.ln1(h))
        h = b1(h)
        expected = model.unembed(model.ln_f(h))
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(model(x).detach(), ref)  # scoped to the trace


@pytest.mark.parametrize("n_layers", [0, -1])
def test_zero_layers_is_refused(n_layers):
    with pytest.raises(ToyConfigError, match="n_layers must be >= 1"):
        ToyConfig(vocab_size=5, n_layers=n_layers)
    with pytest.raises(ToyConfigError, match="n_layers"):
        TrainConfig(n_layers=n_layers)


def test_sequence_beyond_position_table_is_refused():
    model = _model(max_seq_len=12)
    model(torch.zeros(1, 12, dtype=torch.long))  # exactly the table: fine
    with pytest.raises(ToyConfigError, match="beyond the position table"):
        model(torch.zeros(1, 13, dtype=torch.long))


def test_unknown_optimizer_is_refused():
    with pytest.raises(TrainConfigError, match="Unknown optimizer 'adam'.*adamw.*sgd"):
        TrainConfig(optimizer="adam")


def test_other_bad_settings_are_refused():
    with pytest.raises(ToyConfigError, match="Unknown attention 'linear'"):
        ToyConfig(vocab_size=5, attention="linear")
    with pytest.raises(ToyConfigError, match=r"no_attn_layers has layers \[3\]"):
        ToyConfig(vocab_size=5, n_layers=3, no_attn_layers=(3,))
    with pytest.raises(ToyConfigError, match="tokens must be"):
        _model()(torch.zeros(12, dtype=torch.long))


@pytest.mark.parametrize("pos_init", ["normal", "sinusoidal", "fourier", "harmonic"])
def test_position_inits_have_the_same_scale_and_are_seeded(pos_init):
    torch.manual_seed(3)
    a = _model(pos_init=pos_init, max_seq_len=64, d_model=16).pos.weight.detach()
    torch.manual_seed(3)
    b = _model(pos_init=pos_init, max_seq_len=64, d_model=16).pos.weight.detach()
    assert torch.equal(a, b)
    assert 0.01 < float(a.std()) < 0.03
    if pos_init != "normal":  # rows are sines/cosines: a fixed norm per frequency pair
        pair = a[:, 0] ** 2 + a[:, 1] ** 2
        torch.testing.assert_close(pair, pair[:1].expand_as(pair))
    with pytest.raises(ToyConfigError, match="Unknown pos_init"):
        ToyConfig(vocab_size=5, pos_init="rope")


def test_harmonic_positions_are_orthogonal_except_d_apart():
    d, n = 32, 64  # offsets up to 2d - 1 = 63
    p = _model(pos_init="harmonic", max_seq_len=n, d_model=d).pos.weight.detach().double()
    gram = p @ p.T / (p[0] @ p[0])  # [n, n], 1 on the diagonal
    offset = (torch.arange(n)[:, None] - torch.arange(n)[None]).abs()
    assert torch.allclose(gram[offset == 0], torch.ones(n, dtype=torch.double), atol=1e-5)
    assert torch.allclose(
        gram[offset == d], -torch.ones(2 * (n - d), dtype=torch.double), atol=1e-5
    )
    others = (offset != 0) & (offset != d)
    assert gram[others].abs().max() < 1e-4


@pytest.mark.parametrize("pos_init", ["normal", "harmonic"])
def test_pos_std_scales_only_the_position_table(pos_init):
    torch.manual_seed(5)
    a = _model(pos_init=pos_init, max_seq_len=64, d_model=16)
    torch.manual_seed(5)
    b = _model(pos_init=pos_init, max_seq_len=64, d_model=16, pos_std=0.1)
    torch.testing.assert_close(b.pos.weight, a.pos.weight * 5)
    torch.testing.assert_close(b.embed.weight, a.embed.weight)
    with pytest.raises(ToyConfigError, match="pos_std must be > 0"):
        ToyConfig(vocab_size=5, pos_std=0.0)


def test_torch_init_keeps_pytorchs_defaults_and_scales_the_position_table():
    # The paper's code leaves PyTorch's defaults: embeddings N(0, 1), linear layers
    # uniform in +-1/sqrt(fan_in). The position table is N(0, 1) rescaled to pos_std.
    d = 64
    torch.manual_seed(0)
    m = _model(init="torch", d_model=d, d_mlp=4 * d, max_seq_len=256, vocab_size=300)
    assert 0.95 < float(m.embed.weight.detach().std()) < 1.05
    bound = 1 / d**0.5
    w = m.blocks[0].attn.q_proj.weight.detach()
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound
    assert 0.015 < float(m.pos.weight.detach().std()) < 0.025  # pos_std 0.02 by default
    torch.manual_seed(0)
    big = _model(init="torch", d_model=d, d_mlp=4 * d, max_seq_len=256, vocab_size=300, pos_std=1)
    torch.testing.assert_close(big.pos.weight, m.pos.weight * 50)
    torch.testing.assert_close(big.embed.weight, m.embed.weight)
    torch.manual_seed(0)
    small = _model(d_model=d, d_mlp=4 * d, max_seq_len=256, vocab_size=300)
    assert 0.018 < float(small.embed.weight.detach().std()) < 0.022
    with pytest.raises(ToyConfigError, match="Unknown init 'xavier'.*small.*torch"):
        ToyConfig(vocab_size=5, init="xavier")
