"""Tiny random models for tests, cached per process: ``from tests.models import tiny, ARCHS``."""

from __future__ import annotations

from workbench.models.tiny import tiny_architectures

ARCHS = tiny_architectures()
_CACHE: dict[str, object] = {}


def tiny(arch: str):
    """A cached tiny random model of ``arch`` (self-tested on first load)."""
    if arch not in _CACHE:
        import workbench as wb

        _CACHE[arch] = wb.load_model(f"tiny:{arch}")
    return _CACHE[arch]


def tiny_variant(arch: str, **config):
    """A fresh tiny model of ``arch`` with config attributes changed before it is wrapped,
    e.g. ``tiny_variant("Gemma2ForCausalLM", final_logit_softcapping=0.5)``; returns the
    workbench model and the same HF module (for references)."""
    from nnsight import TransformersModel

    from workbench.models.adapters import adapter_for
    from workbench.models.model import WorkbenchModel
    from workbench.models.tiny import tiny_hf_model

    hf, tok = tiny_hf_model(arch)
    for k, v in config.items():
        setattr(hf.config, k, v)
    hf.eval()
    model = WorkbenchModel(
        TransformersModel(hf, tokenizer=tok), tok, adapter_for(hf, tok), f"tiny:{arch}+{config}"
    )
    return model, hf
