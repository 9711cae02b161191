"""Training: the loss falls, runs resume exactly, bad settings are refused."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from workbench.toy.bigram_backcopy import BBTask
from workbench.toy.training import (
    BatchStream,
    ResumeError,
    TrainConfig,
    TrainConfigError,
    batch_for_step,
    load_run,
    steps_per_draw,
    train,
)

SMALL = dict(d_model=32, d_mlp=64, seq_len=32, batch_size=16, probe_batch=8, snapshot_len=8)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def task() -> BBTask:
    return BBTask.from_prose()


def test_200_steps_lower_the_loss(task):
    cfg = TrainConfig(**SMALL, steps=200, probe_every=50, lr=3e-3)
    res = train(cfg, task=task, progress=False)
    df = res.probes
    assert df["step"].tolist() == [0, 50, 100, 150, 200]
    start = df["bigram_risk"].iloc[0]  # untrained: about log(vocab) = 3.7 nats
    end = df["bigram_risk"].iloc[-1]
    assert start > 3.0
    assert end < start - 1.0, df[["step", "loss", "bigram_risk"]]
    assert df["loss"].iloc[-1] < 0.75 * df["loss"].iloc[1]
    assert set(res.snapshots) == {0, 50, 100, 150, 200}
    assert res.snapshots[200].shape == (1, 8, 8)


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_resumed_run_is_identical_to_an_uninterrupted_one(task, tmp_path, optimizer):
    base = dict(**SMALL, probe_every=4, checkpoint_every=6, optimizer=optimizer)
    straight = train(TrainConfig(**base, steps=12), task=task, progress=False)
    out = tmp_path / "run"
    train(TrainConfig(**base, steps=7), task=task, out_dir=out, progress=False)
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 7
    resumed = train(TrainConfig(**base, steps=12), task=task, out_dir=out, progress=False)
    for (name, a), b in zip(
        straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    cols = ["step", "loss", "backcopy_excess", "attn_bos_L0"]
    assert resumed.probes["step"].tolist() == [0, 4, 7, 8, 12]  # 7: end of the first leg
    pd.testing.assert_frame_equal(
        straight.probes.set_index("step").loc[[0, 4, 8, 12], cols[1:]],
        resumed.probes.set_index("step").loc[[0, 4, 8, 12], cols[1:]],
        rtol=1e-6,
    )
    # Weights on disk are safetensors and load back into the same numbers.
    saved = load_file(str(out / "checkpoint" / "model.safetensors"))
    assert torch.equal(saved["embed.weight"], resumed.model.embed.weight)
    # The optimiser state loads with weights_only=True (no pickled code).
    torch.load(out / "checkpoint" / "optim.pt", weights_only=True)
    again = load_run(out)
    assert torch.equal(again.model.unembed.weight, resumed.model.unembed.weight)
    assert again.probes["step"].tolist() == [0, 4, 7, 8, 12]


def test_resume_refuses_other_settings(task, tmp_path):
    out = tmp_path / "run"
    train(TrainConfig(**SMALL, steps=3, checkpoint_every=3), task=task, out_dir=out, progress=False)
    with pytest.raises(ResumeError, match="other settings.*'d_model': \\(32, 48\\)"):
        train(
            TrainConfig(**{**SMALL, "d_model": 48}, steps=6), task=task, out_dir=out, progress=False
        )
    # Bookkeeping (how often to probe or checkpoint) may change on resume; the run may not.
    with pytest.raises(ResumeError, match="beyond steps=2"):
        train(TrainConfig(**SMALL, steps=2), task=task, out_dir=out, progress=False)
    # resume=False starts over in the same folder.
    res = train(
        TrainConfig(**{**SMALL, "d_model": 48}, steps=2),
        task=task,
        out_dir=out,
        resume=False,
        progress=False,
    )
    assert res.model.cfg.d_model == 48


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "adam"}, "Unknown optimizer 'adam'"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"probe_every": 0}, "probe_every must be >= 1"),
    ],
)
def test_bad_training_settings_raise(kwargs, match):
    with pytest.raises(TrainConfigError, match=match):
        TrainConfig(**kwargs)


def test_unknown_config_keys_are_named():
    with pytest.raises(TrainConfigError, match=r"Unknown TrainConfig keys \['d_modle'\]"):
        TrainConfig.from_dict({"d_modle": 3})


def test_learning_rate_schedule_is_a_function_of_the_step():
    cfg = TrainConfig(lr=1e-3, lr_schedule="cosine", warmup_steps=10, steps=110)
    assert cfg.lr_at(0) == pytest.approx(1e-4)
    assert cfg.lr_at(9) == pytest.approx(1e-3)
    assert cfg.lr_at(60) == pytest.approx(5e-4)
    assert cfg.lr_at(110) == pytest.approx(0.0, abs=1e-12)
    assert TrainConfig(optimizer="sgd").lr_at(5) == TrainConfig(optimizer="sgd").learning_rate
    with pytest.raises(TrainConfigError, match="Unknown lr_schedule 'linear'"):
        TrainConfig(lr_schedule="linear")


def test_time_budget_stops_early_and_probes_the_last_step(task, tmp_path):
    cfg = TrainConfig(**SMALL, steps=50, probe_every=20, checkpoint_every=20)
    res = train(cfg, task=task, out_dir=tmp_path / "run", progress=False, max_seconds=0.0)
    assert res.probes["step"].tolist() == [0]
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["step"] == 0
    # The stopped run resumes to the end.
    res = train(cfg, task=task, out_dir=tmp_path / "run", progress=False)
    assert res.probes["step"].tolist() == [0, 20, 40, 50]


def test_errors_are_workbench_errors():
    from workbench.errors import WorkbenchError
    from workbench.toy import BBTaskError, ToyConfigError

    for exc in (BBTaskError, ToyConfigError, TrainConfigError, ResumeError):
        assert issubclass(exc, WorkbenchError)


@pytest.mark.parametrize("batch_size", [8, 100, 300])
def test_batch_stream_equals_batch_for_step_and_every_step_is_fresh(task, batch_size):
    cfg = TrainConfig(batch_size=batch_size, seq_len=32)
    n = steps_per_draw(cfg)
    stream = BatchStream(task, cfg)
    steps = range(2 * n + 1)  # crosses two block boundaries
    got = [stream(s) for s in steps]
    for s in steps:
        assert got[s].shape == (batch_size, 32)
        assert torch.equal(got[s], batch_for_step(task, cfg, s))
    # Fresh data at every step: no two steps share a batch, and few rows coincide (short BB
    # sequences can repeat by chance, when a row locks into a loop early).
    assert len({tuple(b.flatten().tolist()) for b in got}) == len(got)
    flat = torch.cat(got)
    assert len({tuple(row.tolist()) for row in flat}) > 0.95 * len(flat)


def test_peak_settings_build_the_minimal_model_with_torch_init():
    from workbench.toy.training import build_model, peak_settings

    cfg = peak_settings(steps=5, batch_size=None)  # None keeps the preset's value
    assert (cfg.n_layers, cfg.no_attn_layers, cfg.init, cfg.steps) == (3, (0, 2), "torch", 5)
    assert cfg.batch_size == 32
    model = build_model(cfg, vocab_size=10)
    assert [b.attn is not None for b in model.blocks] == [False, True, False]
    assert model.cfg.init == "torch" and 0.5 < float(model.embed.weight.detach().std()) < 1.5
    full = peak_settings(True)
    assert (full.batch_size, full.seq_len, full.init, full.no_attn_layers) == (
        512,
        256,
        "torch",
        (0, 2),
    )


def test_step_loss_leaves_the_bos_prediction_out_when_asked():
    from workbench.toy.training import step_loss

    torch.manual_seed(0)
    tokens = torch.randint(0, 5, (3, 6))
    logits = torch.randn(3, 5, 5, requires_grad=True)  # predictions from tokens[:, :-1]
    ref = torch.stack(
        [
            -torch.log_softmax(logits[b, t], -1)[tokens[b, t + 1]]
            for b in range(3)
            for t in range(1, 5)
        ]
    ).mean()
    torch.testing.assert_close(step_loss(logits, tokens, bos_loss=False), ref)
    full = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), tokens[:, 1:].reshape(-1))
    torch.testing.assert_close(step_loss(logits, tokens), full)
    step_loss(logits, tokens, bos_loss=False).backward()
    assert logits.grad[:, 0].abs().max() == 0 and logits.grad[:, 1:].abs().max() > 0


def test_progress_bar_ends_at_its_total(monkeypatch):
    """Regression: the bar closed at steps/steps+1, which notebooks draw as a failure."""
    from workbench.toy import training

    bars = []
    real = training.tqdm

    def spy(*args, **kwargs):
        bar = real(*args, **kwargs)
        bars.append(bar)
        return bar

    monkeypatch.setattr(training, "tqdm", spy)
    training.train(training.settings(steps=3, probe_every=1), progress=True)
    assert bars and bars[-1].n == bars[-1].total
