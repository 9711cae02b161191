"""Benchmark: building the token→feature graph against a plain forward pass, and its memory.

Prints, from one run on the embedded model:

- tokens/s of ``build_graph`` (the nnsight trace stopped after the deepest SAE layer, SAE
  encoding of every layer, and the bitset/context updates), as a ratio to a plain HF
  forward pass (``use_cache=False``, as the build runs) stopped after the same layer by a
  torch hook, no nnsight, on the same windows; for all three SAEs at once and for each
  layer alone (target >= 0.8);
- the peak memory of the build at two corpus sizes (target: flat).

Timings alternate between the two contenders (the fastest of ``--repeat`` runs of each,
and the ratio of medians beside it), so a change in the machine's speed hits both alike.
The SAEs are the ``full`` preset's cached ones when present, else random ones of the same
shape (encoding costs the same either way).

    .venv/bin/python -m benchmarks.bench_function_tokens [--tokens 8128] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics

import torch

import workbench as wb
from benchmarks.measure import fmt_mb, peak_memory_mb, timeit
from workbench.analysis.function_tokens import build_graph, corpus, prepare_saes, settings
from workbench.sae import SAE, SAEConfig, SAEMissingError, token_windows


class _Stop(Exception):
    pass


def plain_forward_to(model, windows: torch.Tensor, layer: int, batch_size: int) -> None:
    """HF forward over ``windows`` stopped after ``layer`` by a plain torch hook."""
    block = model.hf_module(model.adapter.layers)[layer]

    def stop(*_):
        raise _Stop

    handle = block.register_forward_hook(stop)
    try:
        with torch.inference_mode():
            for s in range(0, windows.shape[0], batch_size):
                try:
                    model.hf(windows[s : s + batch_size].to(model.device), use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=8128, help="tokens per timed run")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--memory-tokens", type=int, nargs=2, default=[1016, 8128])
    args = ap.parse_args()

    s = settings("full")
    model = wb.load_model(s.model, device=s.device)
    model.hf.set_attn_implementation(s.attn)
    texts = corpus()
    try:
        saes, _ = prepare_saes(model, s, texts, train=False, progress=False)
        source = "the full preset's trained SAEs"
    except SAEMissingError:
        saes = {
            i: SAE(SAEConfig(model.d_model, s.sae.d_sae, "topk", k=s.sae.k, hook_layer=i)).eval()
            for i in s.layers
        }
        source = "random SAEs of the full preset's shape (none trained yet)"
    windows = token_windows(model, texts, length=s.length, max_tokens=args.tokens)
    n_tok = windows.shape[0] * (s.length - 1)
    print(
        f"model {model.model_id} ({model.attn_implementation}), {n_tok} tokens in "
        f"{windows.shape[0]} windows of {s.length}, batch {s.batch_size}, torch threads "
        f"{torch.get_num_threads()}; {source}: d_sae {s.sae.d_sae}, k {s.sae.k}"
    )

    def graph(layers, max_tokens=n_tok):
        return build_graph(
            model,
            {i: saes[i] for i in layers},
            texts,
            max_tokens=max_tokens,
            length=s.length,
            batch_size=s.batch_size,
            progress=False,
        )

    configs = [tuple(s.layers)] + [(i,) for i in s.layers]
    for layers in configs:
        depth = max(layers)
        t_plain, t_graph = [], []
        plain_forward_to(model, windows[:1], depth, 1)  # warm-up
        for _ in range(args.repeat):
            t_plain.append(
                timeit(lambda d=depth: plain_forward_to(model, windows, d, s.batch_size), 1, 0)
            )
            t_graph.append(timeit(lambda ls=layers: graph(ls), 1, 0))
        # The fastest of the alternating runs: the machine's speed drifts (shared host), and
        # the least-disturbed run of each is the fairest pair; the medians are printed too.
        tp, tg = min(t_plain), min(t_graph)
        med = statistics.median(t_plain) / statistics.median(t_graph)
        print(
            f"SAE layers {list(layers)!s:<12} depth {depth:>2}: plain forward {n_tok / tp:7.1f} "
            f"tok/s, graph build {n_tok / tg:7.1f} tok/s, ratio {tp / tg:.2f} (target >= 0.8; "
            f"ratio of medians {med:.2f})"
        )

    small, large = args.memory_tokens
    m_small = peak_memory_mb(lambda: graph(s.layers, small))
    m_large = peak_memory_mb(lambda: graph(s.layers, large))
    print(
        f"peak memory of the 3-layer graph build: {small} tokens {fmt_mb(m_small)}, {large} "
        f"tokens {fmt_mb(m_large)} (ratio {m_large / max(m_small, 1e-9):.2f}, target: flat)"
    )


if __name__ == "__main__":
    main()
