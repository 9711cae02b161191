"""Benchmark: the Bigram-Backcopy toy end to end on a CPU, in one run.

Prints, measured side by side in this process:

1. data generation: the vectorised generator (``BBTask.sample``) against a plain per-token
   Python loop (``slow_sample``), on the same batch shape (the training batch and 512), and
   per training batch as ``train`` draws them (one call per block of steps). Target: at
   least 50x per training batch.
2. the main run: 1 layer, softmax attention, AdamW, the CPU defaults of
   ``workbench.toy.settings()`` (lr 1e-3 unless ``--lr``), stopped after ``--minutes``.
   Targets: backcopy excess risk < 1e-3 nats and bigram excess risk < 0.05 nats within
   10 minutes; attention on BOS at non-trigger queries >= 0.95. The step and time at which
   the risk targets were first met are printed.
3. BOS residual-norm growth over the same ``--compare-steps`` steps for AdamW, SGD with
   momentum (at each of ``--sgd-lrs``), and ReLU attention (AdamW), per residual stream,
   over the whole run and over its second half. Target: SGD's and ReLU's
   growth at least 5x smaller than Adam's (absolute values). The AdamW numbers come from
   the main run's probes (same settings and seed, hence the same trajectory).
4. wall time of the whole benchmark and the process's peak resident memory (VmHWM).

The machine may be shared: wall times are what this run saw (the load average is printed
at the start and the end), not a property of the code.

Usage:
    .venv/bin/python benchmarks/bench_bigram_backcopy.py [--minutes 10] [--threads 2]
        [--compare-steps 3000] [--sgd-lrs 0.1,0.03] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from workbench.toy.bigram_backcopy import BBTask, slow_sample
from workbench.toy.probes import growth, order_of_events
from workbench.toy.training import BatchStream, TrainConfig, settings, steps_per_draw, train

BACKCOPY_TARGET = 1e-3
BIGRAM_TARGET = 0.05
SINK_TARGET = 0.95
GROWTH_TARGET = 5.0
SPEEDUP_TARGET = 50.0


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_generation(task: BBTask, batch: int, seq_len: int, repeats: int = 5) -> float:
    """Time both generators on one shape (vectorised: median of ``repeats``); the speed-up."""
    task.sample(batch, seq_len, seed=12345)  # builds the alias tables outside the timing
    fast_times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        task.sample(batch, seq_len, seed=r)
        fast_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    slow_sample(task, batch, seq_len, seed=0)
    slow = time.perf_counter() - t0
    fast = statistics.median(fast_times)
    n = batch * seq_len
    print(
        f"  {batch:4d} x {seq_len}: vectorised {fast * 1e3:7.2f} ms ({n / fast / 1e6:5.2f} M tok/s)"
        f" | loop {slow * 1e3:7.1f} ms ({n / slow / 1e6:5.3f} M tok/s) | {slow / fast:5.1f}x"
    )
    return slow / fast


def bench_training_draw(task: BBTask, cfg: TrainConfig, repeats: int = 5) -> float:
    """Seconds per training batch as ``train`` draws them (one generator call per block of
    ``steps_per_draw`` steps) against the loop generating one batch; the speed-up."""
    n = steps_per_draw(cfg)
    stream = BatchStream(task, cfg)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        for step in range(r * n, (r + 1) * n):
            stream(step)
        times.append((time.perf_counter() - t0) / n)
    fast = statistics.median(times)
    t0 = time.perf_counter()
    slow_sample(task, cfg.batch_size, cfg.seq_len, seed=0)
    slow = time.perf_counter() - t0
    print(
        f"  training draws {n} steps x {cfg.batch_size} sequences per call: "
        f"{fast * 1e3:.2f} ms per batch | loop {slow * 1e3:.1f} ms per batch | {slow / fast:.1f}x"
    )
    return slow / fast


def main_run(cfg: TrainConfig, task: BBTask, minutes: float):
    print(
        f"\n2. main run: 1 layer, softmax, AdamW lr {cfg.learning_rate:g} ({cfg.lr_schedule}), "
        f"d_model {cfg.d_model}, batch {cfg.batch_size} x {cfg.seq_len}, "
        f"budget {minutes:.1f} min"
    )
    t0 = time.perf_counter()
    res = train(cfg, task=task, progress=True, max_seconds=minutes * 60)
    wall = time.perf_counter() - t0
    df = res.probes
    last = df.iloc[-1]
    steps = int(last["step"])
    print(f"  {steps} steps in {wall:.0f} s ({wall / max(1, steps) * 1e3:.0f} ms/step)")
    print(
        f"  final: backcopy excess {last['backcopy_excess']:.2e} nats, bigram excess "
        f"{last['bigram_excess']:.4f} nats (oracle entropy {last['bigram_oracle']:.3f}), "
        f"attention on BOS at non-trigger queries {last['attn_bos_L0']:.4f}, "
        f"on the previous token at trigger queries {last['attn_prev_trigger_L0']:.4f}"
    )
    hit = df[(df["backcopy_excess"] < BACKCOPY_TARGET) & (df["bigram_excess"] < BIGRAM_TARGET)]
    if len(hit):
        first = hit.iloc[0]
        print(
            f"  risk targets first met at step {int(first['step'])}, {first['wall_s']:.0f} s: MET"
        )
    else:
        print(
            f"  risk targets (backcopy < {BACKCOPY_TARGET:g}, bigram < {BIGRAM_TARGET:g}) "
            f"within {minutes:.1f} min: MISSED"
        )
    print(f"  sink target (>= {SINK_TARGET}): {_verdict(last['attn_bos_L0'] >= SINK_TARGET)}")
    first = df.iloc[0]
    for k in sorted(int(c.rsplit("_", 1)[1]) for c in df if c.startswith("bos_resid_norm_")):
        print(
            f"  residual norm, stream {k}: BOS {first[f'bos_resid_norm_{k}']:.3f} -> "
            f"{last[f'bos_resid_norm_{k}']:.3f}, others {first[f'other_resid_norm_{k}']:.3f} -> "
            f"{last[f'other_resid_norm_{k}']:.3f}"
        )
    print(f"  order of events (half-way steps): {order_of_events(df)}")
    return df


def growth_comparison(
    cfg: TrainConfig, task: BBTask, adam_probes, steps: int, sgd_lrs: list[float]
) -> None:
    if adam_probes["step"].max() < steps:
        steps = int(adam_probes["step"].max())
        print(f"  the main run stopped early: comparing over its {steps} steps")
    short = replace(cfg, steps=steps)
    if cfg.lr_schedule == "constant":  # same settings and seed: the main run's first steps
        runs = {"AdamW": adam_probes[adam_probes["step"] <= steps]}
    else:  # the schedule depends on the run length: train a run of this length
        runs = {"AdamW": train(short, task=task, progress=False).probes}
    variants = [(f"SGD {lr:g}", {"optimizer": "sgd", "lr": lr}) for lr in sgd_lrs]
    variants.append(("ReLU", {"attention": "relu"}))
    others = [name for name, _ in variants]
    for name, changes in variants:
        c = replace(short, **changes)
        t0 = time.perf_counter()
        runs[name] = train(c, task=task, progress=False).probes
        last = runs[name].iloc[-1]
        print(
            f"  {name}: lr {c.learning_rate:g}, {time.perf_counter() - t0:.0f} s; final backcopy "
            f"excess {last['backcopy_excess']:.3g}, bigram excess {last['bigram_excess']:.3g}, "
            f"attention on BOS {last['attn_bos_L0']:.3f}"
        )
    streams = sorted(
        int(c.rsplit("_", 1)[1]) for c in adam_probes.columns if c.startswith("bos_resid_norm_")
    )
    half = (steps // 2 // cfg.probe_every) * cfg.probe_every
    for label, since in (("whole run", None), (f"second half (steps {half}-{steps})", half)):
        print(f"  BOS residual-norm growth, {label}; stream k = after k layers:")
        print(
            "  stream"
            + "".join(f"{n:>12}" for n in runs)
            + "".join(f"{'Adam/' + n:>14}" for n in others)
        )
        verdicts = []
        for k in streams:
            g = {n: growth(p, f"bos_resid_norm_{k}", since=since) for n, p in runs.items()}
            ratios = [g["AdamW"] / abs(g[x]) if g[x] else float("inf") for x in others]
            verdicts.append(all(r >= GROWTH_TARGET for r in ratios))
            print(
                f"  {k:>6}"
                + "".join(f"{g[n]:>+12.4f}" for n in runs)
                + "".join(f"{r:>13.1f}x" for r in ratios)
            )
        print(
            f"  target (Adam's growth >= {GROWTH_TARGET:.0f}x each other run's), {label}: "
            + ", ".join(f"stream {k} {_verdict(v)}" for k, v in zip(streams, verdicts, strict=True))
        )
    for n, p in runs.items():
        last = p.iloc[-1]
        print(
            f"  {n}: final BOS / other residual norm, last stream: "
            f"{last[f'bos_resid_norm_{streams[-1]}']:.3f} / "
            f"{last[f'other_resid_norm_{streams[-1]}']:.3f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-time budget, main run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare-steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=None, help="AdamW lr (default 1e-3)")
    ap.add_argument("--lr-schedule", default=None, choices=["constant", "cosine"])
    ap.add_argument("--sgd-lrs", default="0.1,0.03", help="SGD learning rates (0.03: the paper's)")
    ap.add_argument("--quick", action="store_true", help="tiny settings, to check the script")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    cfg = settings(lr=args.lr, lr_schedule=args.lr_schedule)
    if args.quick:
        cfg = replace(cfg, steps=60, probe_every=20, batch_size=8)
        args.compare_steps, args.minutes = 40, 1.0
    else:
        # Enough steps that the time budget, not the step count, ends the run.
        cfg = replace(
            cfg, steps=max(cfg.steps, 100_000) if cfg.lr_schedule == "constant" else cfg.steps
        )
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} (1 min)"
    )
    task = BBTask.from_prose()
    print(f"task: {task.n_chars} characters + BOS, triggers {list(task.decode(task.triggers))}")

    print("\n1. data generation, same shape (vectorised: median of 5; loop: 1 run)")
    for b in (cfg.batch_size, 512):
        bench_generation(task, b, cfg.seq_len)
    speedup = bench_training_draw(task, cfg)
    print(
        f"  target >= {SPEEDUP_TARGET:.0f}x per training batch, as training draws it: "
        f"{_verdict(speedup >= SPEEDUP_TARGET)} ({speedup:.1f}x)"
    )

    df = main_run(cfg, task, args.minutes)

    print(
        f"\n3. BOS residual-norm growth, AdamW vs SGD vs ReLU attention, {args.compare_steps} steps"
    )
    sgd_lrs = [float(x) for x in args.sgd_lrs.split(",") if x]
    growth_comparison(cfg, task, df, args.compare_steps, sgd_lrs)

    print(
        f"\n4. whole benchmark: {time.perf_counter() - t_start:.0f} s wall, peak resident memory "
        f"{_peak_rss_mb():.0f} MB, load average {os.getloadavg()[0]:.1f} (1 min)"
    )


if __name__ == "__main__":
    main()
