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
3. the residual-state peak: the minimal 3-layer model (attention only at layer 1,
   ``workbench.toy.PEAK_SETTINGS``: PyTorch's default init as in the paper's code, width 64,
   sequences of 64) trained ``--compare-steps`` steps with AdamW, with SGD + momentum (at
   each of ``--sgd-lrs``; 0.03 is the paper's) and with ReLU attention (AdamW). The growth of
   the BOS residual norm after layer 0 (where the paper reads the peak: what layer 1's
   attention reads), over the whole run and over its second half, per residual stream.
   Target: SGD's and ReLU's growth at least 5x smaller than Adam's (absolute values).
4. the authors' comparison (``--authors``; ``--authors-only`` runs just this): their recipe
   (``workbench.toy.AUTHORS_SETTINGS``: AdamW 3e-4, betas (0.9, 0.99), weight decay 1e-4; SGD
   0.03, momentum 0.9, weight decay 1e-4; LayerNorm with bias; PyTorch's default init; the
   case-sensitive vocabulary) at the scale of ``--width/--seq-len/--batch/--steps``:
   AdamW vs SGD vs ReLU attention on each of ``--archs`` (default 3xTF and 2xTF+MLP), and
   AdamW on each of ``--arch-compare`` (the appendix's architectures). Per run: wall time,
   the BOS norm after layer 0 and the other tokens' (BOS excess), and the growth ratios
   Adam/SGD and Adam/ReLU over the whole run and its second half. Target: >= 5x each.
5. wall time of the whole benchmark and the process's peak resident memory (VmHWM).

The machine may be shared: wall times are what this run saw (the load average is printed
at the start and the end), not a property of the code.

Usage:
    .venv/bin/python -m benchmarks.bench_bigram_backcopy [--minutes 10] [--threads 2]
        [--compare-steps 10000] [--sgd-lrs 0.03] [--no-bos-loss] [--quick] [--authors]
    # just the authors' comparison, at a chosen scale, on 1 thread:
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_bigram_backcopy --authors-only \
        --threads 1 --width 64 --seq-len 64 --batch 32 --steps 4000 --archs 3xTF 2xTF+MLP \
        --save runs/bench_authors  # probes per run, as CSV
    # the paper's scale, on a GPU:
    python -m benchmarks.bench_bigram_backcopy --authors-only --paper-scale --device cuda
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
from workbench.toy.training import (
    ARCHITECTURES,
    BatchStream,
    TrainConfig,
    authors_settings,
    optimizer_variants,
    peak_settings,
    settings,
    steps_per_draw,
    train,
)

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


def peak_comparison(
    task: BBTask, steps: int, sgd_lrs: list[float], *, bos_loss: bool = True
) -> None:
    """AdamW, SGD and ReLU attention on the minimal residual-peak model, ``steps`` each.

    The peak is read where the paper reads it: the BOS residual norm after layer 0 (stream
    1), the stream layer 1's attention reads. Later streams are printed too; in the ReLU
    model they also carry BOS's own unnormalised self-attention (its one visible key).
    """
    base = peak_settings(steps=steps, bos_loss=bos_loss)
    print(
        f"  model: {base.n_layers} layers, attention only at layer 1, d_model {base.d_model}, "
        f"init {base.init!r}, batch {base.batch_size} x {base.seq_len}; AdamW lr "
        f"{base.learning_rate:g}; SGD momentum {base.momentum}; BOS prediction "
        f"{'trained' if base.bos_loss else 'left out of the loss'}"
    )
    variants = [("AdamW", {})]
    variants += [(f"SGD {lr:g}", {"optimizer": "sgd", "lr": lr}) for lr in sgd_lrs]
    variants.append(("ReLU attn", {"attention": "relu"}))
    runs = {}
    for name, changes in variants:
        cfg = replace(base, **changes)
        t0 = time.perf_counter()
        runs[name] = train(cfg, task=task, progress=False).probes
        last = runs[name].iloc[-1]
        print(
            f"  {name:<10} {time.perf_counter() - t0:4.0f} s: backcopy excess "
            f"{last['backcopy_excess']:.1e}, bigram excess {last['bigram_excess']:.3f}, "
            f"sink mass L1 {last['attn_bos_L1']:.3f}, value norm L1 BOS/other "
            f"{last['bos_value_norm_L1']:.2f}/{last['other_value_norm_L1']:.2f}, "
            f"residual norm after layer 0 BOS/other {last['bos_resid_norm_1']:.2f}/"
            f"{last['other_resid_norm_1']:.2f}"
        )
    others = [n for n in runs if n != "AdamW"]
    streams = sorted(
        int(c.rsplit("_", 1)[1]) for c in runs["AdamW"].columns if c.startswith("bos_resid_norm_")
    )
    half = (steps // 2 // base.probe_every) * base.probe_every
    for label, since in (("whole run", None), (f"second half (steps {half}-{steps})", half)):
        print(f"  BOS residual-norm growth, {label}; stream k = after k layers:")
        print(
            "  stream"
            + "".join(f"{n:>12}" for n in runs)
            + "".join(f"{'Adam/' + n:>16}" for n in others)
        )
        for k in streams:
            g = {n: growth(p, f"bos_resid_norm_{k}", since=since) for n, p in runs.items()}
            ratios = [g["AdamW"] / abs(g[x]) if g[x] else float("inf") for x in others]
            print(
                f"  {k:>6}"
                + "".join(f"{g[n]:>+12.3f}" for n in runs)
                + "".join(f"{r:>15.1f}x" for r in ratios)
            )
            if k == 1:
                verdict = {x: r >= GROWTH_TARGET for x, r in zip(others, ratios, strict=True)}
        print(
            f"  target (Adam's growth after layer 0 >= {GROWTH_TARGET:.0f}x each other run's), "
            f"{label}: " + ", ".join(f"{x} {_verdict(v)}" for x, v in verdict.items())
        )


def _authors_run(cfg: TrainConfig, task: BBTask, name: str, device: str, save: Path | None = None):
    """Train one run of the authors' comparison and print its line; its probes (also written
    to ``save/<name>.csv`` when given, so a killed benchmark keeps its finished runs)."""
    t0 = time.perf_counter()
    df = train(cfg, task=task, progress=False, device=device).probes
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
        df.to_csv(save / f"{cfg.architecture}_{name}.csv".replace(",", "-"), index=False)
    last = df.iloc[-1]
    sink = f"{last['attn_bos_L1']:.3f}" if "attn_bos_L1" in df else "  -  "
    print(
        f"  {name:<22} {time.perf_counter() - t0:5.0f} s, {int(last['step'])} steps: backcopy "
        f"excess {last['backcopy_excess']:.1e}, bigram excess {last['bigram_excess']:.3f}, "
        f"sink mass L1 {sink}, BOS norm after layer 0 {last['bos_resid_norm_1']:.2f} vs "
        f"{last['other_resid_norm_1']:.2f} (excess {_excess(last):+.2f})",
        flush=True,
    )
    return df


def _excess(row) -> float:
    """BOS's norm after layer 0 minus the other tokens' mean."""
    return float(row["bos_resid_norm_1"] - row["other_resid_norm_1"])


def authors_comparison(
    base: TrainConfig,
    task: BBTask,
    archs: list[str],
    arch_compare: list[str],
    device: str,
    save: Path | None = None,
) -> None:
    """The authors' optimiser comparison per architecture, then BOS excess per architecture."""
    print(
        f"  recipe: {base.d_model} wide, MLP {base.d_mlp}, batch {base.batch_size} x "
        f"{base.seq_len}, {base.steps} steps, LayerNorm bias {base.ln_bias}, init {base.init!r}, "
        f"{task.n_chars} characters + BOS, probes {base.probe_style!r}"
    )
    adam_runs = {}
    half = (base.steps // 2 // base.probe_every) * base.probe_every
    for arch in archs:
        cfg = replace(base, layers=arch)
        print(f"\n  {cfg.architecture}: AdamW vs SGD vs ReLU attention")
        runs = {
            n: _authors_run(replace(cfg, **v), task, n, device, save)
            for n, v in optimizer_variants().items()
        }
        adam_runs[cfg.architecture] = runs["AdamW"]
        for label, since in (("whole run", None), (f"second half (from step {half})", half)):
            g = {n: growth(df, "bos_resid_norm_1", since=since) for n, df in runs.items()}
            gx = {
                n: _excess(df[df["step"] >= (since or 0)].iloc[-1])
                - _excess(df[df["step"] >= (since or 0)].iloc[0])
                for n, df in runs.items()
            }
            ratios = {
                n: g["AdamW"] / abs(g[n]) if g[n] else float("inf") for n in g if n != "AdamW"
            }
            print(
                f"  {label}: growth of the BOS norm after layer 0 "
                + ", ".join(f"{n} {v:+.2f}" for n, v in g.items())
                + "; of its excess "
                + ", ".join(f"{n} {v:+.2f}" for n, v in gx.items())
                + "; Adam/"
                + ", Adam/".join(f"{n} {r:.1f}x" for n, r in ratios.items())
                + f" (target >= {GROWTH_TARGET:.0f}x: "
                + ", ".join(f"{n} {_verdict(r >= GROWTH_TARGET)}" for n, r in ratios.items())
                + ")"
            )
    if arch_compare:
        print("\n  BOS excess after layer 0 per architecture (AdamW, authors' recipe):")
        for arch in arch_compare:
            cfg = replace(base, layers=arch, **optimizer_variants()["AdamW"])
            if cfg.architecture not in adam_runs:
                adam_runs[cfg.architecture] = _authors_run(cfg, task, "AdamW", device, save)
        for arch, df in adam_runs.items():
            last = df.iloc[-1]
            print(
                f"  {arch:<12} excess {_excess(last):+7.2f} (step 0: {_excess(df.iloc[0]):+.2f}),"
                f" BOS norm {last['bos_resid_norm_1']:.2f}, others {last['other_resid_norm_1']:.2f}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=10.0, help="wall-time budget, main run")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compare-steps", type=int, default=10_000)
    ap.add_argument("--lr", type=float, default=None, help="AdamW lr (default 1e-3)")
    ap.add_argument("--lr-schedule", default=None, choices=["constant", "cosine"])
    ap.add_argument("--sgd-lrs", default="0.03", help="SGD learning rates (0.03: the paper's)")
    ap.add_argument(
        "--no-bos-loss",
        action="store_true",
        help="section 3: leave the BOS position's own prediction out of the loss",
    )
    ap.add_argument("--quick", action="store_true", help="tiny settings, to check the script")
    ap.add_argument("--authors", action="store_true", help="add section 4 (the authors' recipe)")
    ap.add_argument("--authors-only", action="store_true", help="run only section 4")
    ap.add_argument("--paper-scale", action="store_true", help="section 4 at the paper's scale")
    ap.add_argument("--width", type=int, default=None, help="section 4: d_model (MLP 4x)")
    ap.add_argument("--seq-len", type=int, default=None, help="section 4: tokens per sequence")
    ap.add_argument("--batch", type=int, default=None, help="section 4: sequences per step")
    ap.add_argument("--steps", type=int, default=None, help="section 4: steps per run")
    ap.add_argument("--archs", nargs="*", default=["3xTF", "2xTF+MLP"], help="section 4")
    ap.add_argument(
        "--arch-compare", nargs="*", default=list(ARCHITECTURES), help="section 4, AdamW only"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--save", type=Path, default=None, help="section 4: write probes CSVs here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    if args.authors_only:
        _section_authors(args)
        print(
            f"\n5. whole benchmark: {time.perf_counter() - t_start:.0f} s wall, peak resident "
            f"memory {_peak_rss_mb():.0f} MB, load average {os.getloadavg()[0]:.1f} (1 min)"
        )
        return
    cfg = settings(lr=args.lr, lr_schedule=args.lr_schedule)
    if args.quick:
        cfg = replace(cfg, steps=60, probe_every=20, batch_size=8)
        args.compare_steps, args.minutes = 100, 1.0
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

    main_run(cfg, task, args.minutes)

    print(
        f"\n3. residual-state peak, AdamW vs SGD vs ReLU attention, {args.compare_steps} steps each"
    )
    sgd_lrs = [float(x) for x in args.sgd_lrs.split(",") if x]
    peak_comparison(task, args.compare_steps, sgd_lrs, bos_loss=not args.no_bos_loss)

    if args.authors:
        _section_authors(args)

    print(
        f"\n5. whole benchmark: {time.perf_counter() - t_start:.0f} s wall, peak resident memory "
        f"{_peak_rss_mb():.0f} MB, load average {os.getloadavg()[0]:.1f} (1 min)"
    )


def _section_authors(args: argparse.Namespace) -> None:
    base = authors_settings(
        args.paper_scale,
        d_model=args.width,
        d_mlp=None if args.width is None else 4 * args.width,
        seq_len=args.seq_len,
        batch_size=args.batch,
        steps=args.steps,
    )
    if args.quick:
        base = replace(base, steps=40, probe_every=20, batch_size=8)
    if base.steps < 4 * base.probe_every:  # at least four probes per run
        base = replace(base, probe_every=max(1, base.steps // 4))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} (1 min)"
    )
    print("\n4. the authors' recipe: residual-state peak per optimiser and per architecture")
    authors_comparison(
        base, base.make_task(), args.archs, args.arch_compare, args.device, args.save
    )


if __name__ == "__main__":
    main()
