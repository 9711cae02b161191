"""Attribution benchmark: AtP against a plain forward, and against exact head patching.

Prints, from one run on the embedded model (or --model) with an IOI-style prompt padded
to --tokens tokens:
- AtP over every head and MLP at every position (two forward passes and one backward
  pass) as a ratio to a plain HF forward of the same tokens (target <= 3x); the runs
  alternate and the ratio is the median of the per-round ratios (this machine's speed
  drifts);
- exact patching of every head and MLP (layers x (heads + 1) patched runs, batched per
  layer) and its ratio to the plain forward, and what layers x heads plain forwards cost;
- the correlation of AtP with exact patching, and the largest misses;
- the peak memory of each.

    .venv/bin/python -m benchmarks.bench_attribution [--model M] [--tokens 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import workbench as wb
from benchmarks.measure import fmt_mb, peak_memory_mb
from workbench.analysis import attribution as at

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def _pad(model, text: str, n: int) -> str:
    """``text`` preceded by filler sentences until it has about ``n`` tokens."""
    filler = "The weather was mild and the streets were quiet that afternoon. "
    out = text
    while len(model.tokenize(out).to_list()[0]) < n:
        out = filler + out
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    model = wb.load_model(args.model, device=args.device)
    clean, corrupt = _pad(model, CLEAN, args.tokens), _pad(model, CORRUPT, args.tokens)
    tc, tx = model.tokenize(clean), model.tokenize(corrupt)
    if tc.lengths != tx.lengths:
        raise SystemExit(f"prompts differ in length: {tc.lengths} vs {tx.lengths}")
    metric = at.LogitDiff(" Mary", " John", tokenizer=model.tokenizer)
    print(
        f"model {model.model_id}, {tx.lengths[0]} tokens, {model.n_layers} layers x "
        f"{model.n_heads} heads, torch threads {torch.get_num_threads()}"
    )

    def plain():
        with torch.no_grad():
            model.hf(tx.input_ids, use_cache=False)

    def atp():
        return at.attribution_patching(model, tc, tx, metric)

    plain(), atp()  # warm up
    ratios, t_plain, t_atp = [], [], []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        plain()
        a = time.perf_counter() - t0
        t0 = time.perf_counter()
        atp()
        b = time.perf_counter() - t0
        t_plain.append(a)
        t_atp.append(b)
        ratios.append(b / a)
    p = statistics.median(t_plain)
    print(f"plain forward:                          {1000 * p:8.1f} ms")
    print(
        f"AtP, every head and MLP x position:     {1000 * statistics.median(t_atp):8.1f} ms  "
        f"ratio {statistics.median(ratios):.2f}x (median of {args.rounds} alternating rounds; "
        f"range {min(ratios):.2f}-{max(ratios):.2f}; target <= 3x)"
    )
    t0 = time.perf_counter()
    exact = at.exact_patching(model, tc, tx, metric, progress=False)
    t_exact = time.perf_counter() - t0
    n_naive = model.n_layers * model.n_heads
    print(
        f"exact patching, {exact.forwards} patched runs (batched per layer): "
        f"{t_exact:8.1f} s  ratio {t_exact / p:.1f}x; {n_naive} plain forwards would take "
        f"~{n_naive * p:.1f} s ({n_naive}x)"
    )
    res = atp()
    table = at.compare(res, exact, n=5)
    print(
        f"AtP vs exact over {table.attrs['n_components']} components (each patched at every "
        f"position): correlation {table.attrs['correlation']:.3f}; metric clean "
        f"{res.metric_clean:+.3f}, corrupt {res.metric_corrupt:+.3f}"
    )
    print(table.to_string(index=False, float_format=lambda x: f"{x:+.4f}"))
    dev = str(model.device)
    m_plain, m_atp = peak_memory_mb(plain, dev), peak_memory_mb(atp, dev)
    print(f"peak memory: plain {fmt_mb(m_plain)}, AtP {fmt_mb(m_atp)}")


if __name__ == "__main__":
    main()
