"""Foundation benchmark: capture overhead against a plain HF forward, and load times.

Prints, from one run on the embedded model (or --model) with a 256-token prompt:
- full capture (every residual pre/mid/post and every attention probability) and
  logits-only capture, each as a ratio to a plain HF forward with output_attentions=True
  (the three run in turn, --repeat rounds; the ratio is the median of per-round ratios);
- the peak memory of each;
- the first (GGUF dequantization) and cached (safetensors) load times of the embedded model.

    .venv/bin/python -m benchmarks.bench_capture [--model M] [--device cuda] [--tokens 256]
"""

from __future__ import annotations

import argparse
import time

import torch

import workbench as wb
from benchmarks.measure import alternate, fmt_mb, peak_memory_mb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default=None)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--skip-load", action="store_true", help="skip the load-time measurement")
    args = ap.parse_args()

    if args.model is None and not args.skip_load:
        t0 = time.perf_counter()
        wb.load_model(use_cache=False, self_test=False)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        wb.load_model(self_test=False)
        cached = time.perf_counter() - t0
        print(
            f"embedded load: GGUF dequantization {first:.1f} s, safetensors cache {cached:.1f} s "
            f"({first / cached:.0f}x faster)"
        )
    model = wb.load_model(args.model, device=args.device)
    dev = str(model.device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, model.adapter.vocab_size - 100, (1, args.tokens), generator=g)
    tokens = model.tokenize(ids.to(model.device))
    full = ["resid_pre", "resid_mid", "resid_post", "attn_probs", "logits"]

    def plain():
        with torch.no_grad():
            model.hf(tokens.input_ids, attention_mask=tokens.attention_mask, output_attentions=True)

    def cap_full():
        return wb.capture(model, tokens, full)

    def cap_logits():
        return wb.capture(model, tokens, ["logits"])

    med, ratio = alternate(
        {"plain": plain, "full": cap_full, "logits": cap_logits}, args.repeat, device=dev
    )
    t_plain, t_full, t_logits = med["plain"], med["full"], med["logits"]
    m_plain = peak_memory_mb(plain, dev)
    m_full = peak_memory_mb(cap_full, dev)
    m_logits = peak_memory_mb(cap_logits, dev)
    print(
        f"model {model.model_id} on {dev}, {args.tokens} tokens, torch threads "
        f"{torch.get_num_threads()}"
    )
    print(
        f"plain HF forward (output_attentions=True): {t_plain * 1e3:8.1f} ms  peak "
        f"{fmt_mb(m_plain)}"
    )
    print(
        f"capture, every residual + attention probs: {t_full * 1e3:8.1f} ms  peak "
        f"{fmt_mb(m_full)}  ratio {ratio['full']:.2f}x (target <= 1.3x)"
    )
    print(
        f"capture, logits only:                      {t_logits * 1e3:8.1f} ms  peak "
        f"{fmt_mb(m_logits)}  ratio {ratio['logits']:.2f}x"
    )


if __name__ == "__main__":
    main()
