"""Named settings for the function-token notebook, the corpus, and where its SAEs come from.

========================  ==================================================================
preset                    what it is for
========================  ==================================================================
``quick``                 CI and a first look: a few thousand tokens, small SAEs (minutes)
``full``                  the issue's offline settings: a 200k-token graph, SAEs trained on
                          60k tokens at layers 6/14/22 of SmolLM2 (SAEs: about 3 minutes for
                          all three on 2 idle cores; the whole notebook under half an hour)
``gemma-2-9b``            GPU and hub: Gemma-2-9B with Gemma Scope SAEs at layers 9/20/31,
                          the paper's setting
``gemma-2-2b``            the same for Gemma-2-2B (layers 6/12/18), on a smaller GPU
========================  ==================================================================

Example:
    >>> s = settings("quick", graph_tokens=5000)     # overrides; None means "keep the preset"
    >>> texts = corpus()
    >>> saes, reports = prepare_saes(model, s, texts)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields, replace
from typing import Any

import pandas as pd

from workbench.analysis.function_tokens.errors import FunctionTokenError
from workbench.analysis.function_tokens.sae_fit import sae_fit
from workbench.analysis.function_tokens.tiny_lm import TinyLMConfig
from workbench.models.model import WorkbenchModel
from workbench.sae.cache import cached_saes
from workbench.sae.model import SAE
from workbench.sae.saelens import gemma_scope_folder, load_pretrained
from workbench.sae.training import SAEReport, TrainConfig

__all__ = ["PRESETS", "Settings", "corpus", "pythia_losses", "prepare_saes", "settings"]


@dataclass
class Settings:
    """Everything the notebook's sections need; see :data:`PRESETS`."""

    name: str
    model: str | None = None
    device: str = "cpu"
    attn: str = "sdpa"  # no attention probabilities are read here: the fast kernel
    layers: tuple[int, ...] = (6, 14, 22)
    coverage: float = 0.4
    sae_source: str = "train"  # "train" (offline) or "gemma-scope" (hub)
    sae_release: str = ""  # Gemma Scope repo, e.g. google/gemma-scope-9b-pt-res
    sae_width: str = "16k"
    sae_l0: float = 100.0  # pick the Gemma Scope SAE whose average L0 is nearest
    sae_tokens: int = 4_000
    sae: TrainConfig = field(default_factory=TrainConfig)
    graph_tokens: int = 2_000
    length: int = 128
    batch_size: int = 8
    loss_tokens: int = 1_000
    # first tokens read per document by the graph and the loss table (None: whole
    # documents); a budget then spans more documents, which the intervals resample
    doc_tokens: int | None = None
    lm: TinyLMConfig = field(default_factory=TinyLMConfig)
    pythia: str = "EleutherAI/pythia-160m"
    pythia_revisions: tuple[str, ...] = (
        "step0",
        "step512",
        "step4000",
        "step16000",
        "step64000",
        "step143000",
    )


PRESETS: dict[str, Settings] = {
    "quick": Settings(
        "quick",
        sae_tokens=4_000,
        sae=TrainConfig(d_sae=512, k=32, batch_size=512, epochs=4, lr=2e-3, log_every=5),
        graph_tokens=2_000,
        loss_tokens=4_000,
        doc_tokens=128,
        lm=TinyLMConfig(steps=30, batch_size=8, n_checkpoints=4, eval_windows=32, time_limit_s=120),
    ),
    "full": Settings(
        "full",
        sae_tokens=60_000,
        sae=TrainConfig(d_sae=2048, k=64, batch_size=1024, epochs=10, lr=1e-3, time_limit_s=420),
        graph_tokens=200_000,
        loss_tokens=20_000,
        doc_tokens=1_000,
        lm=TinyLMConfig(steps=1500, n_checkpoints=10, time_limit_s=15 * 60),
    ),
    "gemma-2-9b": Settings(
        "gemma-2-9b",
        model="google/gemma-2-9b",
        device="cuda",
        attn="eager",  # Gemma-2's logit soft-capping is exact in eager attention
        layers=(9, 20, 31),
        sae_source="gemma-scope",
        sae_release="google/gemma-scope-9b-pt-res",
        graph_tokens=200_000,
        length=256,
        batch_size=16,
        loss_tokens=50_000,
        pythia="EleutherAI/pythia-1.4b",
        lm=TinyLMConfig(steps=1500, n_checkpoints=10),
    ),
    "gemma-2-2b": Settings(
        "gemma-2-2b",
        model="google/gemma-2-2b",
        device="cuda",
        attn="eager",
        layers=(6, 12, 18),
        sae_source="gemma-scope",
        sae_release="google/gemma-scope-2b-pt-res",
        graph_tokens=200_000,
        length=256,
        batch_size=16,
        loss_tokens=50_000,
        lm=TinyLMConfig(steps=1500, n_checkpoints=10),
    ),
}


def settings(preset: str = "quick", *, lm_steps: int | None = None, **overrides: Any) -> Settings:
    """The preset's settings with ``overrides`` applied (``None`` values are ignored).

    ``lm_steps`` sets the tiny LM's training steps (``settings.lm.steps``).
    """
    if preset not in PRESETS:
        raise FunctionTokenError(f"Unknown preset {preset!r}; choose one of {sorted(PRESETS)}.")
    if lm_steps is not None:
        overrides["lm"] = replace(PRESETS[preset].lm, steps=int(lm_steps))
    names = {f.name for f in fields(Settings)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise FunctionTokenError(f"Unknown settings {unknown}; known: {sorted(names)}.")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "layers" in given:
        given["layers"] = tuple(given["layers"])
    return replace(PRESETS[preset], **given)


def corpus(*, seed: int = 0) -> list[str]:
    """The local prose and code documents, alternated (prose first) in a seeded order.

    Alternating keeps both domains in any prefix; code files are longer, so most tokens
    of a long stream are code.
    """
    from workbench.data import load_corpus

    prose, code = load_corpus("prose"), load_corpus("code")
    rng = random.Random(seed)
    rng.shuffle(prose)
    rng.shuffle(code)
    out: list[str] = []
    for i in range(max(len(prose), len(code))):
        out.extend(d[i] for d in (prose, code) if i < len(d))
    return out


def _gemma_scope(model: WorkbenchModel, s: Settings) -> dict[int, SAE]:
    from huggingface_hub import list_repo_files

    files = list_repo_files(s.sae_release)
    saes = {}
    for layer in s.layers:
        folder = gemma_scope_folder(files, layer, s.sae_width, s.sae_l0)
        saes[layer] = load_pretrained(s.sae_release, folder, device=model.device)
    return saes


def prepare_saes(
    model: WorkbenchModel,
    s: Settings,
    texts: list[str],
    *,
    analysed: list[str] | None = None,
    train: bool = True,
    progress: bool = True,
) -> tuple[dict[int, SAE], pd.DataFrame]:
    """The SAEs of ``s.layers`` (trained and cached, or fetched) and a table of their metrics.

    ``texts`` is the training text (and, for pretrained SAEs, where they are measured);
    ``analysed`` the text the analysis reads (default: ``texts``). The table has the fit on
    the training text (``fvu``, ``l0``, ``dead``: held-out tokens) and on the first
    ``min(s.graph_tokens, 20_000)`` tokens of the analysed text (``fvu (analysed)``,
    ``l0 (analysed)``, ``dead (analysed)``, ``poor_fit``: FVU above
    :data:`~workbench.analysis.function_tokens.sae_fit.POOR_FIT_FVU`).

    Example:
        >>> saes, table = prepare_saes(lm, s, corpus(), analysed=my_texts)
        >>> print(fit_warning(table))
    """
    saes, table = _prepare(model, s, texts, train=train, progress=progress)
    fit = sae_fit(
        model,
        saes,
        texts if analysed is None else analysed,
        n_tokens=min(s.graph_tokens, 20_000),
        length=s.length,
        batch_size=s.batch_size,
        outlier_norm_ratio=s.sae.outlier_norm_ratio,
        progress=progress,
    )
    for c in ("fvu", "l0", "dead"):
        table[f"{c} (analysed)"] = fit[c]
    table["poor_fit"] = fit["poor_fit"]
    return saes, table


def _prepare(
    model: WorkbenchModel, s: Settings, texts: list[str], *, train: bool, progress: bool
) -> tuple[dict[int, SAE], pd.DataFrame]:
    """The SAEs and their metrics on their training text (see :func:`prepare_saes`)."""
    if s.sae_source == "train":
        saes, reports = cached_saes(
            model,
            texts,
            s.layers,
            n_tokens=s.sae_tokens,
            cfg=s.sae,
            length=s.length,
            batch_size=s.batch_size,
            train=train,
            progress=progress,
        )
        rows = [reports[i].row() for i in sorted(reports)]
        return saes, pd.DataFrame(rows).set_index("layer")
    if s.sae_source == "gemma-scope":
        from workbench.sae import drop_outliers, evaluate_sae
        from workbench.sae.activations import harvest

        saes = _gemma_scope(model, s)
        store = harvest(
            model,
            texts,
            s.layers,
            n_tokens=s.sae_tokens,
            length=s.length,
            batch_size=s.batch_size,
            progress=progress,
        )
        rows = []
        for i, sae in saes.items():
            acts, dropped = drop_outliers(
                store.acts[i].to(sae.W_enc.device), s.sae.outlier_norm_ratio
            )
            m = evaluate_sae(sae, acts)
            rows.append(
                SAEReport(
                    layer=i,
                    hook_name=sae.cfg.hook_name,
                    d_sae=sae.cfg.d_sae,
                    architecture=sae.cfg.architecture,
                    fvu=m["fvu"],
                    l0=m["l0"],
                    dead=m["dead"],
                    n_train_tokens=0,
                    n_eval_tokens=int(acts.shape[0]),
                    steps=0,
                    seconds=0.0,
                    outliers_dropped=dropped,
                ).row()
            )
        return saes, pd.DataFrame(rows).set_index("layer")
    raise FunctionTokenError(
        f"Unknown SAE source {s.sae_source!r}; use 'train' (offline) or 'gemma-scope' (hub)."
    )


def pythia_losses(
    s: Settings, texts: list[str], *, max_tokens: int = 5_000, progress: bool = True
) -> pd.DataFrame:
    """Class losses of ``s.pythia`` at ``s.pythia_revisions`` (needs a model hub).

    The function tokens are recounted with Pythia's own tokenizer. Columns: revision,
    step, class, mean_loss, n.
    """
    import workbench as wb
    from workbench.analysis.function_tokens.frequency import count_tokens, function_tokens
    from workbench.analysis.function_tokens.loss import loss_over_checkpoints

    last = wb.load_model(s.pythia, revision=s.pythia_revisions[-1], device=s.device)
    ids = function_tokens(count_tokens(last.tokenizer, texts), s.coverage).ids
    del last

    def load(rev: str) -> WorkbenchModel:
        return wb.load_model(s.pythia, revision=rev, device=s.device)

    out = loss_over_checkpoints(load, s.pythia_revisions, texts, ids, max_tokens=max_tokens)
    out["step"] = out["revision"].str.removeprefix("step").astype(int)
    return out
