"""Benchmark: information-flow route graphs on the embedded model, in one run.

Prints, for a 256-token prose prompt on the embedded SmolLM2-135M (CPU):

1. the full route graph (one forward pass capturing what the decomposition needs, then
   the graph for the last prediction, τ = 0.04) against a plain forward pass with
   attention probabilities (``wb.capture(model, ids, what=["attn_probs"])``; the raw HF
   forward with ``output_attentions=True`` is printed too). Target: at most 3x.
2. the straightforward implementation side by side, on the same captured pass: it
   materialises each layer's [query, key, head, d_model] tensor of parts (what
   llm-transparency-tool does) before building the same graph. Speed ratio and
   peak-memory ratio; we must win both. The graphs are checked to be identical.
3. all-positions importances (every prediction of the prompt), blocked against
   materialised, per layer.
4. peak memory at two prompt lengths, to show that ours does not grow with
   seq² × heads × d_model while the materialised one does.

How peak memory is measured (CPU): the torch profiler with ``profile_memory=True`` records
every allocation and free of the CPU tensor allocator with a timestamp; the running sum of
those events is the live tensor memory, and its maximum over the run is the peak. Only
the route computation is inside the profiled window (the captured forward pass exists
before it, and is the same for both implementations; its size is printed separately). As
a cross-check the process's resident-set high-water mark is reset (``/proc/self/clear_refs``,
value 5) before a run and read back (``VmHWM``) after it; that figure includes allocator
slack and anything else the process touches, so it is noisier.

Timings take the best of ``--repeats`` interleaved runs. The machine may be shared, so
absolute numbers are noisy; ratios from interleaved runs are less so.

Usage:
    .venv/bin/python -m benchmarks.bench_routes [--tokens 256] [--short 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

import workbench as wb
from workbench.analysis.routes import (
    Routes,
    attention_importance,
    attention_importance_materialised,
    forward_pass,
    trace_routes,
)
from workbench.data import load_corpus

MB = 1 << 20


def prompt_ids(model: Any, n: int) -> torch.Tensor:
    """[1, n] token ids of local prose (several documents joined until long enough)."""
    text = ""
    for doc in load_corpus("prose"):
        text += doc + "\n"
        if len(text) > 8 * n:
            break
    ids = model.tokenizer(text).input_ids[:n]
    if len(ids) < n:
        raise SystemExit(f"the prose corpus gave only {len(ids)} tokens; need {n}")
    return torch.tensor([ids])


class Times:
    """Best wall-clock and best CPU time (this process, all threads) over several runs.

    On a shared machine the wall clock also counts time spent waiting for a core; CPU
    time does not, so both are printed.
    """

    def __init__(self) -> None:
        self.wall = self.cpu = float("inf")

    def run(self, fn: Callable[[], Any]) -> Any:
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        self.wall = min(self.wall, time.perf_counter() - w0)
        self.cpu = min(self.cpu, time.process_time() - c0)
        return out

    def __str__(self) -> str:
        return f"{self.wall:8.3f} s wall {self.cpu:8.3f} s CPU"


def best(fn: Callable[[], Any], repeats: int) -> Times:
    t = Times()
    for _ in range(repeats):
        t.run(fn)
    return t


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def measure(fn: Callable[[], Any]) -> tuple[Any, int, int | None]:
    """Run ``fn`` once; return (its result, peak live tensor bytes, RSS high-water rise).

    The tensor peak comes from the torch profiler's memory events (every CPU allocation
    and free, timestamped): the running sum is the live tensor memory, its maximum the
    peak. The RSS rise is VmHWM after minus VmRSS before, with VmHWM reset first.
    """
    gc.collect()
    rss_ok = _reset_rss_peak()
    before = _status_kb("VmRSS")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    rss = (_status_kb("VmHWM") - before) * 1024 if rss_ok else None
    events = [
        (e.start_ns(), e.nbytes())
        for e in prof.profiler.kineto_results.events()
        if e.name() == "[memory]"
    ]
    live = peak = 0
    for _, nbytes in sorted(events):
        live += nbytes
        peak = max(peak, live)
    return out, peak, rss


def same_graph(a: Any, b: Any) -> bool:
    ea = {(u, v, k) for u, v, k in a.graph.edges(keys=True)}
    eb = {(u, v, k) for u, v, k in b.graph.edges(keys=True)}
    return ea == eb


def ratio_line(label: str, num: Times, den: Times, target: float | None = None) -> str:
    rw, rc = num.wall / den.wall, num.cpu / den.cpu
    line = f"{label:58s}{rw:6.2f}x wall {rc:6.2f}x CPU"
    if target is not None:
        ok = rw <= target and rc <= target
        line += f"  ({'meets' if ok else 'MISSES'} the <= {target:g}x target)"
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--short", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tau", type=float, default=0.04)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--dense-layers", type=int, default=4, help="layers timed for section 3")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = wb.load_model()
    print(f"# Route benchmark: {model.model_id}, {platform.machine()}, torch {torch.__version__}")
    print(
        f"# {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, load average "
        f"{os.getloadavg()[0]:.1f} at start; the machine may be shared."
    )
    ids = prompt_ids(model, args.tokens)
    n_layers, n_heads, d = model.n_layers, model.n_heads, model.d_model
    s = ids.shape[1]

    # -- 1. full route graph against a plain forward with probabilities --------------------
    def plain_forward() -> Any:
        return wb.capture(model, ids, what=["attn_probs"])

    def hf_forward() -> Any:
        with torch.no_grad():
            return model.hf(ids, output_attentions=True)

    def full_graph() -> Any:
        return trace_routes(model, ids).graph(-1, args.tau)

    def route_capture() -> Any:
        return forward_pass(model, ids)

    for f in (plain_forward, hf_forward, full_graph):  # warm-up
        f()
    t_plain, t_hf, t_full, t_cap = Times(), Times(), Times(), Times()
    for _ in range(args.repeats):  # interleaved, best of
        t_plain.run(plain_forward)
        t_hf.run(hf_forward)
        t_full.run(full_graph)
        t_cap.run(route_capture)
    fp = forward_pass(model, ids)
    t_graph = best(lambda: Routes(fp).graph(-1, args.tau), args.repeats)
    g = Routes(fp).graph(-1, args.tau)
    print(f"\n## 1. Full route graph, {s} tokens, prediction = last, tau = {args.tau}")
    print(f"graph: {g.graph.number_of_nodes()} nodes, {g.graph.number_of_edges()} edges")
    print(f"{'plain forward with attention probabilities (wb.capture)':58s}{t_plain}")
    print(f"{'HF forward, output_attentions=True (no nnsight)':58s}{t_hf}")
    print(f"{'full route graph (capture + checks + graph)':58s}{t_full}")
    print(f"{'  its capture + exactness checks alone':58s}{t_cap}")
    print(f"{'  its graph from the captured pass alone':58s}{t_graph}")
    print(ratio_line("RATIO full route graph / plain forward with probabilities", t_full,
                     t_plain, target=3))  # fmt: skip
    print(ratio_line("ratio full route graph / HF forward, output_attentions", t_full, t_hf))

    # -- 2. straightforward (materialised) graph side by side --------------------------------
    def ours() -> Any:
        return Routes(fp).graph(-1, args.tau)

    def straightforward() -> Any:
        return Routes(fp, materialised=True).graph(-1, args.tau)

    t_ours = best(ours, args.repeats)
    t_naive = best(straightforward, 1)
    g_ours, m_ours, r_ours = measure(ours)
    g_naive, m_naive, r_naive = measure(straightforward)
    print(f"\n## 2. The same graph, straightforward materialised implementation ({s} tokens)")
    print(f"identical graphs: {same_graph(g_ours, g_naive)}")
    fmt = lambda r: "n/a" if r is None else f"{r / MB:.1f} MB"  # noqa: E731
    print(f"{'':34s}{'time':>36s}{'peak tensors':>14s}{'RSS rise':>11s}")
    print(f"{'blocked, lazy (ours)':34s}{t_ours}{m_ours / MB:11.1f} MB{fmt(r_ours):>11s}")
    print(f"{'materialised [q,k,h,d] per layer':34s}{t_naive}{m_naive / MB:11.1f} MB"
          f"{fmt(r_naive):>11s}")  # fmt: skip
    print(ratio_line("SPEED RATIO straightforward / ours", t_naive, t_ours))
    print(f"{'MEMORY RATIO straightforward / ours (tensor peak)':58s}"
          f"{m_naive / max(m_ours, 1):6.1f}x")  # fmt: skip
    if r_ours and r_naive:
        print(f"{'  (RSS high-water rise ratio)':58s}{r_naive / max(r_ours, 1):6.1f}x")

    # -- 3. every prediction: blocked against materialised, per layer -----------------------
    layers = sorted({round(i * (n_layers - 1) / max(1, args.dense_layers - 1))
                     for i in range(args.dense_layers)})  # fmt: skip
    t_b, t_m = Times(), Times()
    t_b.wall = t_b.cpu = t_m.wall = t_m.cpu = 0.0
    for layer in layers:
        tb = best(lambda layer=layer: attention_importance(fp, layer), 1)
        tm = best(lambda layer=layer: attention_importance_materialised(fp, layer), 1)
        t_b.wall, t_b.cpu = t_b.wall + tb.wall / len(layers), t_b.cpu + tb.cpu / len(layers)
        t_m.wall, t_m.cpu = t_m.wall + tm.wall / len(layers), t_m.cpu + tm.cpu / len(layers)
    _, m_b, _ = measure(lambda: attention_importance(fp, layers[0]))
    _, m_m, _ = measure(lambda: attention_importance_materialised(fp, layers[0]))
    print(f"\n## 3. Importances for all {s} predictions, per layer (mean of layers {layers})")
    print(f"{'blocked (ours)':34s}{t_b}  peak {m_b / MB:8.1f} MB")
    print(f"{'materialised':34s}{t_m}  peak {m_m / MB:8.1f} MB")
    print(ratio_line("SPEED RATIO materialised / blocked", t_m, t_b))
    print(f"{'MEMORY RATIO materialised / blocked':58s}{m_m / max(m_b, 1):6.1f}x")
    print(f"all {n_layers} layers, all predictions, blocked (estimated): "
          f"{t_b.wall * n_layers:.1f} s wall = {t_b.wall * n_layers / t_plain.wall:.1f}x the "
          "plain forward")  # fmt: skip

    # -- 4. peak memory at two lengths --------------------------------------------------------
    print("\n## 4. Peak memory of the route computation at two prompt lengths")
    print("(the captured pass is excluded and listed last; q*k*h*d is one layer's [query, key, "
          "head, d_model] tensor in float32)")  # fmt: skip
    print(f"{'tokens':>7s}{'q*k*h*d':>10s}{'ours: graph':>13s}{'ours: layer':>13s}"
          f"{'materialised':>14s}{'captured':>11s}")  # fmt: skip
    mid = n_layers // 2
    for length in sorted({args.short, s}):
        fp_n = forward_pass(model, ids[:, :length])
        cap_bytes = sum(
            t.numel() * t.element_size()
            for t in (fp_n.resid_pre, fp_n.attn_out, fp_n.mlp_out, fp_n.attn_probs,
                      fp_n.values, fp_n.head_out)
        )  # fmt: skip
        full = length * length * n_heads * d * 4
        _, pg, _ = measure(lambda fp_n=fp_n: Routes(fp_n).graph(-1, args.tau))
        _, pl, _ = measure(lambda fp_n=fp_n: attention_importance(fp_n, mid))
        _, pm, _ = measure(lambda fp_n=fp_n: attention_importance_materialised(fp_n, mid))
        print(f"{length:7d}{full / MB:8.0f}MB{pg / MB:11.1f}MB{pl / MB:11.1f}MB"
              f"{pm / MB:12.1f}MB{cap_bytes / MB:9.1f}MB")  # fmt: skip
        del fp_n
    print(
        "ours: graph = one prediction's route graph; ours: layer = all predictions of one "
        "layer (both blocked). Ours stays near the block budget plus O(seq x heads x d_model); "
        "the materialised peak follows seq^2 x heads x d_model."
    )


if __name__ == "__main__":
    main()
