"""Trained SAEs kept on disk, keyed by model and settings, so a notebook trains them once.

``cache_root()/sae/<model>-<weights>/<settings>/L<layer>/`` holds one SAE in SAELens's
layout (see :mod:`workbench.sae.saelens`).

Example:
    >>> saes, reports = cached_saes(model, docs, layers=[6, 14, 22], n_tokens=100_000,
    ...                             cfg=TrainConfig(d_sae=4096, k=48))   # trains, or reads
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from workbench.models.model import WorkbenchModel
from workbench.sae.activations import harvest
from workbench.sae.model import SAE
from workbench.sae.saelens import TRAIN_HINT, SAEMissingError, load_sae, save_sae
from workbench.sae.training import SAEReport, TrainConfig, train_saes
from workbench.storage import cache_root, content_key

__all__ = ["cached_saes", "sae_folder"]


def sae_folder(model: WorkbenchModel, layer: int, settings: dict) -> Path:
    """Where the SAE of ``layer`` trained with ``settings`` lives."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model.model_id)[:60]
    key = content_key(settings, n=64)
    weights = model.weight_hash().split(":")[-1][:12]
    return cache_root() / "sae" / f"{slug}-{weights}" / key[:16] / f"L{layer}"


def _report_from_cfg(sae: SAE) -> SAEReport:
    e = sae.cfg.extra
    return SAEReport(
        layer=sae.cfg.hook_layer,
        hook_name=sae.cfg.hook_name,
        d_sae=sae.cfg.d_sae,
        architecture=sae.cfg.architecture,
        fvu=float(e.get("fvu", float("nan"))),
        l0=float(e.get("l0", float("nan"))),
        dead=int(e.get("dead", -1)),
        n_train_tokens=int(e.get("n_train_tokens", 0)),
        n_eval_tokens=int(e.get("n_eval_tokens", 0)),
        steps=int(e.get("steps", 0)),
        seconds=float(e.get("seconds", float("nan"))),
        outliers_dropped=int(e.get("outliers_dropped", 0)),
        harvest_seconds=float(e.get("harvest_seconds", float("nan"))),
        history=pd.DataFrame(e.get("history", [])),
    )


def cached_saes(
    model: WorkbenchModel,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    n_tokens: int,
    cfg: TrainConfig,
    length: int = 128,
    batch_size: int = 8,
    train: bool = True,
    progress: bool = True,
) -> tuple[dict[int, SAE], dict[int, SAEReport]]:
    """The SAEs of ``layers`` trained on ``n_tokens`` of ``texts``: read from disk, or trained.

    With ``train=False`` a missing SAE raises :class:`SAEMissingError` instead.
    """
    layers = model.check_layers(layers)
    corpus = content_key(list(texts), n=16)
    settings = {"cfg": asdict(cfg), "n_tokens": n_tokens, "length": length, "corpus": corpus}
    settings["cfg"].pop("time_limit_s", None)
    folders = {i: sae_folder(model, i, settings) for i in layers}
    saes: dict[int, SAE] = {}
    reports: dict[int, SAEReport] = {}
    for i, folder in folders.items():
        if (folder / "cfg.json").is_file():
            saes[i] = load_sae(folder, device=model.device)
            reports[i] = _report_from_cfg(saes[i])
    todo = [i for i in layers if i not in saes]
    if not todo:
        return saes, reports
    if not train:
        raise SAEMissingError(
            f"No trained SAE for layers {todo} of {model.model_id} with these settings "
            f"(looked in {folders[todo[0]].parent}). {TRAIN_HINT}"
        )
    t0 = time.perf_counter()
    store = harvest(
        model,
        texts,
        todo,
        n_tokens=n_tokens,
        length=length,
        batch_size=batch_size,
        progress=progress,
    )
    harvest_s = time.perf_counter() - t0  # one trace per batch serves every layer
    new, new_reports = train_saes(store, cfg, model_name=model.model_id, progress=progress)
    for i in todo:
        r = new_reports[i]
        new[i].cfg.extra.update(
            {
                "n_train_tokens": r.n_train_tokens,
                "n_eval_tokens": r.n_eval_tokens,
                "seconds": r.seconds,
                "harvest_seconds": harvest_s,
                "harvest_layers": todo,
                "history": r.history.to_dict("records"),
            }
        )
        r.harvest_seconds = harvest_s
        save_sae(new[i], folders[i])
        saes[i] = new[i].to(model.device)
        reports[i] = r
    return saes, reports
