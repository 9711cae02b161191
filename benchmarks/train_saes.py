"""Train the function-token notebook's three SAEs at full settings and report them.

One early-stopped nnsight trace per batch harvests the residual stream at all three
layers at once (the harvest is shared); each SAE then trains on its layer. Prints the
harvest time, and per SAE its training time, its share of the harvest, FVU (target
<= 0.2), L0 and dead features. The SAEs are cached where the notebook's ``full`` preset
looks for them (``cache_root()/sae``), in SAELens's layout.

    .venv/bin/python -m benchmarks.train_saes [--preset full] [--layers 6 14 22]
"""

from __future__ import annotations

import argparse
import logging
import time

import torch

import workbench as wb
from workbench.analysis.function_tokens import corpus, prepare_saes, settings


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="full")
    ap.add_argument("--layers", type=int, nargs="*", default=None)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    s = settings(args.preset, layers=args.layers, device=args.device)
    model = wb.load_model(s.model, device=s.device)
    # No attention probabilities are read here; SDPA attention is the faster kernel.
    model.hf.set_attn_implementation("sdpa")
    texts = corpus()
    t0 = time.perf_counter()
    saes, table = prepare_saes(model, s, texts)
    total = time.perf_counter() - t0
    print(
        f"model {model.model_id}, layers {list(s.layers)}, torch threads "
        f"{torch.get_num_threads()}, preset {s.name!r}: {s.sae_tokens} tokens harvested once "
        f"for all layers; SAE d_sae={s.sae.d_sae} {s.sae.architecture} k={s.sae.k}"
    )
    harvest = float(table["harvest_seconds"].iloc[0])
    print(f"harvest (shared by {len(s.layers)} SAEs): {harvest:.0f} s; total wall {total:.0f} s")
    for layer, r in table.iterrows():
        share = r["harvest_seconds"] / len(s.layers)
        print(
            f"L{layer:>2}: train {r['seconds']:6.0f} s + harvest share {share:5.0f} s = "
            f"{(r['seconds'] + share) / 60:5.1f} min (target <= 10)  FVU {r['fvu']:.3f} "
            f"(target <= 0.2)  L0 {r['l0']:.1f}  dead {int(r['dead'])}/{int(r['d_sae'])}  "
            f"steps {int(r['steps'])}  train/eval tokens {int(r['n_train_tokens'])}/"
            f"{int(r['n_eval_tokens'])}  outliers dropped {int(r['outliers_dropped'])}"
        )


if __name__ == "__main__":
    main()
