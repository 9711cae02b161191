"""A small one-head transformer for the Bigram-Backcopy toy.

Pre-LayerNorm, learned positions, no biases in the linear layers, a ReLU MLP, and either
softmax attention or ReLU attention, ``ReLU(logits) / n_visible_keys``. LayerNorms have a
gain only, or a bias too (``ln_bias=True``, as in the authors' code). Each layer is a full
block, attention only or MLP only: ``layers="TF,TF,MLP"``. The authors compare optimisers
on 3xTF; their minimal residual-peak structure is 2xTF+MLP (``"TF,TF,MLP"``), and a model
with no attention at layer 0 (``"MLP,TF,MLP"``) shows only a small BOS excess.

Every block's parts are named submodules, so ``nnsight.NNsight(model)`` reads and edits
them like any other model: ``blocks[i].input`` is the residual stream before layer ``i``,
``blocks[i].attn.probs.output`` the attention pattern ``[B, T, T]``, ``blocks[i].attn.output``
and ``blocks[i].mlp.output`` the two writes to the stream.

Example:
    >>> cfg = ToyConfig(vocab_size=39, n_layers=1)
    >>> model = ToyTransformer(cfg)
    >>> logits = model(torch.zeros(2, 16, dtype=torch.long))  # [2, 16, 39]
    >>> ToyConfig(vocab_size=39, layers="TF,TF,MLP").no_attn_layers
    (2,)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import nn

from workbench.errors import WorkbenchError

__all__ = [
    "ATTENTION_KINDS",
    "LAYER_KINDS",
    "ToyConfig",
    "ToyConfigError",
    "ToyTransformer",
    "layers_spec",
    "parse_layers",
]

ATTENTION_KINDS = ("softmax", "relu")
# A layer's kind: a full block, attention only, or MLP only.
LAYER_KINDS = ("TF", "Attn", "MLP")
POS_INITS = ("normal", "sinusoidal", "fourier", "harmonic")
INITS = ("small", "torch")


class ToyConfigError(WorkbenchError, ValueError):
    """A toy model was configured in a way that cannot be built or run."""


_Config = TypeVar("_Config", bound="JSONConfig")


def parse_layers(spec: str) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """``"TF,TF,MLP"`` -> ``(n_layers, no_attn_layers, no_mlp_layers)``.

    Kinds (case-insensitive, ``+`` or ``,`` between layers, ``3xTF`` repeats): ``TF`` is
    attention then MLP, ``Attn`` attention only, ``MLP`` MLP only.

    Example:
        >>> parse_layers("MLP,TF,MLP")
        (3, (0, 2), ())
        >>> parse_layers("2xTF+MLP")
        (3, (2,), ())
    """
    canon = {k.lower(): k for k in LAYER_KINDS}
    kinds: list[str] = []
    for part in spec.replace("+", ",").split(","):
        part = part.strip()
        # No kind has an "x" in its name, so "3xTF" splits unambiguously.
        count, _, name = part.lower().partition("x") if "x" in part.lower() else ("1", "", part)
        name = canon.get(name.strip().lower())
        if name is None or not count.strip().isdigit() or int(count) < 1:
            raise ToyConfigError(
                f"Cannot read layer {part!r} in layers={spec!r}: expected kinds from "
                f"{LAYER_KINDS} separated by commas, e.g. 'TF,TF,MLP' or '2xTF+MLP'."
            )
        kinds += [name] * int(count)
    no_attn = tuple(i for i, k in enumerate(kinds) if k == "MLP")
    no_mlp = tuple(i for i, k in enumerate(kinds) if k == "Attn")
    return len(kinds), no_attn, no_mlp


def layers_spec(
    n_layers: int, no_attn_layers: tuple[int, ...] = (), no_mlp_layers: tuple[int, ...] = ()
) -> str:
    """The inverse of :func:`parse_layers`: ``(3, (0, 2), ())`` -> ``"MLP,TF,MLP"``."""

    def kind(i: int) -> str:
        attn, mlp = i not in no_attn_layers, i not in no_mlp_layers
        return "TF" if attn and mlp else "Attn" if attn else "MLP" if mlp else "none"

    return ",".join(kind(i) for i in range(n_layers))


class JSONConfig:
    """``to_dict``/``from_dict`` for a config dataclass: tuples become lists on the way out
    (JSON has no tuples), and unknown keys are refused by name on the way in."""

    error: ClassVar[type[Exception]] = ValueError

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls: type[_Config], d: dict[str, Any]) -> _Config:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise cls.error(f"Unknown {cls.__name__} keys {sorted(unknown)}.")
        return cls(**d)


@dataclass(frozen=True)
class ToyConfig(JSONConfig):
    """Shape and variant of a :class:`ToyTransformer`.

    Attributes:
        vocab_size: number of token ids (characters plus BOS).
        n_layers: 1 to 3 in the paper; any positive number works.
        layers: the kind of every layer, e.g. ``"TF,TF,MLP"`` (see :func:`parse_layers`).
            When given it decides ``n_layers``, ``no_attn_layers`` and ``no_mlp_layers``
            (whatever they were set to); ``None`` keeps those three as given.
        d_model: width of the residual stream; the single head is this wide too.
        d_mlp: hidden width of the ReLU MLP.
        max_seq_len: rows of the learned position table; longer inputs are refused.
        attention: ``"softmax"`` or ``"relu"`` (``ReLU(q.k/sqrt(d)) / n_visible``).
        no_attn_layers: layers built without attention.
        no_mlp_layers: layers built without an MLP.
        pos_init: how the learned position table starts: ``"normal"`` (std 0.02, like every
            other weight); ``"sinusoidal"`` (the Transformer's sines and cosines); or
            ``"fourier"`` (sines and cosines at random frequencies up to pi per position,
            which makes "one position back" a sharp rotation); or ``"harmonic"`` (``d/2``
            evenly spaced frequencies ``pi (f + 1/2) / (d/2)``: two positions 1 to 2d-1 apart
            are then exactly orthogonal, except d apart where they are opposite, so a
            previous-token head can be sharp along the whole sequence when ``2d >= seq_len``).
            Trained like the rest.
        pos_std: the standard deviation of the initial position table. A larger one keeps a
            structured table close to its structure while the rest of the model learns.
        init: how every other weight starts: ``"small"`` (GPT-2 style, normal with std 0.02)
            or ``"torch"`` (PyTorch's own defaults, as the paper's code has them: embeddings
            normal with std 1, linear layers uniform in +-1/sqrt(fan_in)). With ``"torch"``
            tokens are far apart from the first step, and in the minimal 3-layer model a sink
            and a residual-state peak form within a few thousand steps.
        ln_bias: LayerNorms with a bias as well as a gain (PyTorch's default and the
            authors' code); False (this project's first choice) keeps a gain only.
    """

    error: ClassVar[type[Exception]] = ToyConfigError

    vocab_size: int
    n_layers: int = 1
    d_model: int = 128
    d_mlp: int = 512
    max_seq_len: int = 256
    attention: Literal["softmax", "relu"] = "softmax"
    no_attn_layers: tuple[int, ...] = field(default_factory=tuple)
    no_mlp_layers: tuple[int, ...] = field(default_factory=tuple)
    pos_init: Literal["normal", "sinusoidal", "fourier", "harmonic"] = "normal"
    pos_std: float = 0.02
    init: Literal["small", "torch"] = "small"
    layers: str | None = None
    ln_bias: bool = False

    def __post_init__(self) -> None:
        if self.layers is not None:
            n, no_attn, no_mlp = parse_layers(self.layers)
            object.__setattr__(self, "n_layers", n)
            object.__setattr__(self, "no_attn_layers", no_attn)
            object.__setattr__(self, "no_mlp_layers", no_mlp)
        # JSON round-trips give lists; keep tuples so the config stays hashable.
        object.__setattr__(self, "no_attn_layers", tuple(int(i) for i in self.no_attn_layers))
        object.__setattr__(self, "no_mlp_layers", tuple(int(i) for i in self.no_mlp_layers))
        if self.n_layers < 1:
            raise ToyConfigError(f"n_layers must be >= 1, got {self.n_layers}.")
        for name in ("vocab_size", "d_model", "d_mlp", "max_seq_len"):
            if getattr(self, name) < 1:
                raise ToyConfigError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.attention not in ATTENTION_KINDS:
            raise ToyConfigError(
                f"Unknown attention {self.attention!r}; choose one of {ATTENTION_KINDS}."
            )
        if not self.pos_std > 0:
            raise ToyConfigError(f"pos_std must be > 0, got {self.pos_std}.")
        if self.init not in INITS:
            raise ToyConfigError(f"Unknown init {self.init!r}; choose one of {INITS}.")
        if self.pos_init not in POS_INITS:
            raise ToyConfigError(f"Unknown pos_init {self.pos_init!r}; choose one of {POS_INITS}.")
        for name in ("no_attn_layers", "no_mlp_layers"):
            bad = [i for i in getattr(self, name) if not 0 <= i < self.n_layers]
            if bad:
                raise ToyConfigError(
                    f"{name} has layers {bad} outside 0..{self.n_layers - 1} "
                    f"(n_layers={self.n_layers})."
                )
        empty = sorted(set(self.no_attn_layers) & set(self.no_mlp_layers))
        if empty:
            raise ToyConfigError(
                f"Layers {empty} have neither attention nor an MLP; drop them or keep one part."
            )

    @property
    def architecture(self) -> str:
        """The layer kinds as a spec, e.g. ``"TF,TF,MLP"``."""
        return layers_spec(self.n_layers, self.no_attn_layers, self.no_mlp_layers)


class Attention(nn.Module):
    """One causal head as wide as the residual stream.

    ``probs`` is an identity module whose output is the attention pattern ``[B, T, T]``:
    it exists so that nnsight (or a hook) can read and replace the pattern.
    """

    def __init__(self, d_model: int, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)
        self.probs = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, T, d]`` (already normalised) -> ``[B, T, d]``."""
        t, d = x.shape[1], x.shape[2]
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)  # [B, T, d] each
        scores = q @ k.transpose(1, 2) / math.sqrt(d)  # [B, Tq, Tk]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # [Tq, Tk]
        if self.kind == "softmax":
            probs = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        else:
            # Query i sees i+1 keys; dividing by that count (not by the ReLU sum) lets a
            # head output ~0 by putting non-positive logits everywhere: no sink needed.
            n_visible = torch.arange(1, t + 1, device=x.device, dtype=x.dtype)  # [Tq]
            probs = scores.relu().masked_fill(~causal, 0.0) / n_visible[:, None]
        probs = self.probs(probs)  # [B, Tq, Tk]
        return self.o_proj(probs @ v)  # [B, T, d]


class MLP(nn.Module):
    def __init__(self, d_model: int, d_mlp: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_mlp, bias=False)
        self.down = nn.Linear(d_mlp, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, T, d]`` -> ``[B, T, d]``."""
        return self.down(torch.relu(self.up(x)))


class Block(nn.Module):
    """Pre-LN block: ``h += attn(ln1(h)); h += mlp(ln2(h))``, either part optional."""

    def __init__(self, cfg: ToyConfig, layer: int) -> None:
        super().__init__()
        has_attn = layer not in cfg.no_attn_layers
        has_mlp = layer not in cfg.no_mlp_layers
        self.ln1 = nn.LayerNorm(cfg.d_model, bias=cfg.ln_bias) if has_attn else None
        self.attn = Attention(cfg.d_model, cfg.attention) if has_attn else None
        self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.ln_bias) if has_mlp else None
        self.mlp = MLP(cfg.d_model, cfg.d_mlp) if has_mlp else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``h``: residual stream ``[B, T, d]`` -> ``[B, T, d]``."""
        if self.attn is not None:
            h = h + self.attn(self.ln1(h))
        if self.mlp is not None:
            h = h + self.mlp(self.ln2(h))
        return h


class ToyTransformer(nn.Module):
    """Token + learned position embedding, ``n_layers`` blocks, final LN, unembedding."""

    def __init__(self, cfg: ToyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.ln_bias)
        self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.init == "small":
            self.apply(_init)
        if cfg.pos_init == "normal":
            drawn_std = INIT_STD if cfg.init == "small" else 1.0  # nn.Embedding draws N(0, 1)
            with torch.no_grad():  # rescaled, not redrawn: the other weights keep their draws
                self.pos.weight.mul_(cfg.pos_std / drawn_std)
        else:
            freq = None
            if cfg.pos_init == "fourier":  # drawn from the global RNG, like every other weight
                freq = torch.rand((cfg.d_model + 1) // 2) * math.pi
            elif cfg.pos_init == "harmonic":
                half = (cfg.d_model + 1) // 2
                freq = (torch.arange(half, dtype=torch.float32) + 0.5) * math.pi / half
            with torch.no_grad():
                self.pos.weight.copy_(_sinusoids(cfg.max_seq_len, cfg.d_model, freq) * cfg.pos_std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens``: ``[B, T]`` int64 -> logits ``[B, T, vocab_size]``."""
        self.check_tokens(tokens)
        h = self.embed(tokens) + self.pos.weight[: tokens.shape[1]]  # [B, T, d]
        for block in self.blocks:
            h = block(h)
        return self.unembed(self.ln_f(h))

    def check_tokens(self, tokens: torch.Tensor) -> None:
        """Refuse inputs the model cannot run, with what was expected and what arrived."""
        if tokens.ndim != 2:
            raise ToyConfigError(f"tokens must be [batch, seq], got shape {tuple(tokens.shape)}.")
        if tokens.shape[1] > self.cfg.max_seq_len:
            raise ToyConfigError(
                f"Sequence length {tokens.shape[1]} is beyond the position table "
                f"(max_seq_len={self.cfg.max_seq_len}); build the model with a larger "
                "max_seq_len or use shorter sequences."
            )


INIT_STD = 0.02


def _sinusoids(n: int, d: int, freq: torch.Tensor | None = None) -> torch.Tensor:
    """``[n, d]`` sines and cosines at ``freq`` (default: geometric, as in the Transformer).

    Shifting a position by one step is then a fixed rotation of this table, which is what a
    previous-token head needs; random positions in d < n dimensions make that map noisy.
    """
    pos = torch.arange(n, dtype=torch.float32)[:, None]  # [n, 1]
    if freq is None:
        freq = torch.exp(-math.log(10_000.0) * torch.arange(0, d, 2, dtype=torch.float32) / d)
    out = torch.zeros(n, d)
    out[:, 0::2] = torch.sin(pos * freq)
    out[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return out * math.sqrt(2.0)  # sin^2 + cos^2 = 1 over a pair: about unit std per entry


def _init(m: nn.Module) -> None:
    # GPT-2 style small init: keeps early logits near uniform, so the order of events
    # (backcopy first, then the sink) is not decided by a lucky draw.
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=INIT_STD)
