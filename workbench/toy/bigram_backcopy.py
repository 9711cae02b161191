"""The Bigram-Backcopy (BB) task of Guo et al. (2024), generated vectorised on the fly.

A sequence starts with BOS. Each later token follows a character bigram table counted
from local English prose, except after a *trigger* (one of the most frequent characters):
then the next token copies the token *before* the trigger.

    BOS  x1  x2 ...  x_{i-1}  x_i=trigger  x_{i+1}=x_{i-1}

``x1`` is drawn from the unigram distribution of the non-trigger characters, so that a
trigger always has a real token before it. The oracle knows the rule, so its risk is 0 at
trigger queries and the entropy of the bigram row elsewhere; "excess risk" is the model's
loss minus that.

Example:
    >>> task = BBTask.from_prose()
    >>> batch = task.sample(batch_size=4, seq_len=256, seed=0)
    >>> batch.shape
    torch.Size([4, 256])
    >>> bool((batch[:, 0] == task.bos).all())
    True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from workbench.errors import WorkbenchError

__all__ = [
    "DEFAULT_CHARS",
    "PAPER_CHARS",
    "BBTask",
    "BBTaskError",
    "OracleRisks",
    "oracle_risks",
    "slow_sample",
]

# Lower-case letters, space and basic punctuation: enough for English, small enough that
# a d_model of 64-128 can hold one direction per token.
DEFAULT_CHARS = "abcdefghijklmnopqrstuvwxyz .,;:'\"()-!?"

# The authors' vocabulary: the 65 case-sensitive characters of their text (tiny
# Shakespeare). Our text is other prose, so characters it lacks are dropped, and runs of
# whitespace (newlines too) become one space, as for the default characters.
PAPER_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class BBTaskError(WorkbenchError, ValueError):
    """A BB task or batch was asked for with settings that cannot work."""


@dataclass(frozen=True)
class BBTask:
    """Vocabulary, bigram table and triggers of one BB task.

    Token ids ``0..n_chars-1`` are characters and ``bos = n_chars`` is the BOS token, so
    ``vocab_size = n_chars + 1``.

    Attributes:
        chars: the characters, in id order.
        bigram: ``[n_chars, n_chars]`` float64 rows summing to 1, ``P(next | current)``.
        unigram: ``[n_chars]`` frequencies of the characters in the text.
        triggers: ``[n_triggers]`` int64 ids of the trigger characters.
    """

    chars: str
    bigram: torch.Tensor  # [C, C] float64
    unigram: torch.Tensor  # [C] float64
    triggers: torch.Tensor  # [n_triggers] int64

    # -- construction ---------------------------------------------------------------

    @classmethod
    def from_text(cls, text: str, *, chars: str = DEFAULT_CHARS, n_triggers: int = 3) -> BBTask:
        """Count bigrams in ``text``, keeping only ``chars``.

        The text is lower-cased first unless ``chars`` has upper-case letters (then the
        vocabulary is case-sensitive, e.g. :data:`PAPER_CHARS`). Runs of whitespace become
        one space; other characters are dropped.

        Example:
            >>> task = BBTask.from_text("the cat ate the hat. " * 20)
            >>> task.decode(task.triggers)  # the three most frequent characters
            'at '
        """
        if n_triggers < 1:
            raise BBTaskError(f"n_triggers must be >= 1, got {n_triggers}.")
        if len(set(chars)) != len(chars):
            raise BBTaskError(f"chars has duplicates: {chars!r}.")
        clean = _clean(text, chars)
        lut = np.full(128, -1, dtype=np.int64)  # ASCII code -> id
        for i, c in enumerate(chars):
            if ord(c) >= 128:
                raise BBTaskError(f"Only ASCII characters are supported, got {c!r}.")
            lut[ord(c)] = i
        ids = lut[np.frombuffer(clean.encode("ascii"), dtype=np.uint8)]
        n = len(chars)
        if len(ids) < 2:
            raise BBTaskError("The text has fewer than 2 usable characters.")
        counts = np.bincount(ids[:-1] * n + ids[1:], minlength=n * n).reshape(n, n)
        unigram = np.bincount(ids, minlength=n).astype(np.float64)
        present = unigram > 0
        if present.sum() <= n_triggers:
            raise BBTaskError(
                f"The text uses only {int(present.sum())} of the characters; need more "
                f"than n_triggers={n_triggers}."
            )
        # Drop characters that never occur: they would be unreachable rows and columns.
        keep = np.flatnonzero(present)
        chars = "".join(chars[i] for i in keep)
        counts = counts[np.ix_(keep, keep)].astype(np.float64)
        unigram = unigram[keep]
        # A character seen only as the very last one has an empty row; send it uniformly.
        empty = counts.sum(1) == 0
        counts[empty] = 1.0
        bigram = counts / counts.sum(1, keepdims=True)
        # Stable sort: ties resolved by id, so the triggers are deterministic.
        triggers = np.argsort(-unigram, kind="stable")[:n_triggers]
        return cls(
            chars=chars,
            bigram=torch.from_numpy(bigram),
            unigram=torch.from_numpy(unigram / unigram.sum()),
            triggers=torch.from_numpy(np.sort(triggers)).long(),
        )

    @classmethod
    def from_prose(cls, *, chars: str = DEFAULT_CHARS, n_triggers: int = 3) -> BBTask:
        """The task counted from ``workbench.data.corpora.prose_corpus()``."""
        from workbench.data.corpora import prose_corpus

        return cls.from_text("\n".join(prose_corpus()), chars=chars, n_triggers=n_triggers)

    # -- sizes ----------------------------------------------------------------------

    @property
    def n_chars(self) -> int:
        return len(self.chars)

    @property
    def bos(self) -> int:
        """The BOS id, one past the last character."""
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def is_trigger(self) -> torch.Tensor:
        """``[vocab_size]`` bool lookup table, False for BOS."""
        out = torch.zeros(self.vocab_size, dtype=torch.bool)
        out[self.triggers] = True
        return out

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Characters for ids, with BOS shown as ``^``."""
        return "".join("^" if int(i) == self.bos else self.chars[int(i)] for i in ids)

    # -- sampling -------------------------------------------------------------------

    def sample(self, batch_size: int, seq_len: int, *, seed: int) -> torch.Tensor:
        """``[batch_size, seq_len]`` int64 BB sequences, BOS first, fully set by ``seed``.

        Vectorised over the batch with Walker's alias method: each bigram draw is one
        uniform bin index plus one comparison, gathered for the whole batch at once, then
        the backcopy rule is applied with ``np.where``. All random numbers are drawn up
        front from one seeded ``numpy`` generator (PCG64), so a seed gives the same batch
        on every machine and thread count.
        """
        if seq_len < 2:
            raise BBTaskError(f"seq_len must be >= 2 (BOS plus one token), got {seq_len}.")
        if batch_size < 1:
            raise BBTaskError(f"batch_size must be >= 1, got {batch_size}.")
        n = self.n_chars
        prob, alias = self._alias  # [C*C] float64, [C*C] int64, flattened row-major
        trig = self.is_trigger().numpy()  # [V] bool
        rng = np.random.default_rng(int(seed))
        bins = rng.integers(0, n, size=(seq_len, batch_size))  # [T, B]
        coins = rng.random((seq_len, batch_size))  # [T, B]

        out = np.empty((seq_len, batch_size), dtype=np.int64)  # [T, B]: rows are contiguous
        out[0] = self.bos
        # x1 ~ unigram over non-triggers, so every trigger has a real token before it.
        first = self.unigram.numpy().copy()
        first[self.triggers.numpy()] = 0.0
        cur = np.searchsorted(np.cumsum(first / first.sum())[:-1], coins[1], side="right")
        out[1] = cur
        prev = out[0]
        for t in range(2, seq_len):
            k = bins[t]
            idx = cur * n + k
            drawn = np.where(coins[t] < prob[idx], k, alias[idx])
            nxt = np.where(trig[cur], prev, drawn)
            out[t] = nxt
            prev, cur = cur, nxt
        return torch.from_numpy(np.ascontiguousarray(out.T))

    @cached_property
    def _alias(self) -> tuple[np.ndarray, np.ndarray]:
        """Alias tables of the bigram rows, flattened: ``prob[c*C + k]``, ``alias[c*C + k]``."""
        return _alias_tables(self.bigram.numpy())

    def masks(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Which *query* positions predict by backcopy and which by bigram.

        Args:
            tokens: ``[B, T]`` BB sequences.

        Returns:
            ``(backcopy, bigram)``, each ``[B, T]`` bool. Position ``i`` is a backcopy query
            when ``tokens[:, i]`` is a trigger and ``i < T-1``; a bigram query when it is a
            non-trigger character and ``i < T-1``. BOS (position 0) is neither: its
            target follows the first-token distribution, not a rule.
        """
        trig = self.is_trigger()[tokens]  # [B, T]
        valid = torch.zeros_like(trig)
        valid[:, 1:-1] = True
        not_bos = tokens != self.bos
        return trig & valid, (~trig) & not_bos & valid

    def target_dist(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, T, vocab_size]`` float64 oracle next-token distribution at every query.

        Rows for BOS and for the last position are zero (no target is scored there).
        """
        b, t = tokens.shape
        out = torch.zeros(b, t, self.vocab_size, dtype=torch.float64)
        bc, bg = self.masks(tokens)
        # bigram rows: P(. | x_i)
        out[..., : self.n_chars][bg] = self.bigram[tokens[bg]]
        # backcopy rows: a point mass on x_{i-1}
        prev = torch.roll(tokens, 1, dims=1)  # [B, T], prev[:, i] = tokens[:, i-1]
        idx = bc.nonzero(as_tuple=True)
        out[idx[0], idx[1], prev[idx]] = 1.0
        return out


def _alias_tables(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias tables for each row of ``p`` ([R, C], rows summing to 1).

    Drawing bin ``k`` uniformly and keeping it with probability ``prob[r, k]`` (otherwise
    taking ``alias[r, k]``) samples exactly from row ``r``.
    """
    rows, n = p.shape
    prob = np.ones((rows, n))
    alias = np.tile(np.arange(n), (rows, 1))
    for r in range(rows):
        q = p[r] * n
        small = [i for i in range(n) if q[i] < 1.0]
        large = [i for i in range(n) if q[i] >= 1.0]
        while small and large:
            s, l = small.pop(), large.pop()
            prob[r, s], alias[r, s] = q[s], l
            q[l] -= 1.0 - q[s]
            (small if q[l] < 1.0 else large).append(l)
        # Leftovers are 1 up to rounding: they keep prob 1 and alias to themselves.
    return prob.ravel(), alias.ravel()


def _clean(text: str, chars: str) -> str:
    cased = any(c.isupper() for c in chars)
    text = re.sub(r"\s+", " ", text if cased else text.lower())
    keep = set(chars)
    text = "".join(c for c in text if c in keep)
    return re.sub(r" +", " ", text)


# -- risks ---------------------------------------------------------------------------


@dataclass(frozen=True)
class OracleRisks:
    """Mean next-token risks of a model on one batch, in nats.

    ``*_risk`` is the model's expected cross-entropy against the oracle's distribution;
    ``*_oracle`` is the oracle's own risk (its entropy); ``*_excess`` is the difference,
    i.e. the mean KL divergence from the oracle to the model.
    """

    backcopy_risk: float
    backcopy_oracle: float
    backcopy_excess: float
    bigram_risk: float
    bigram_oracle: float
    bigram_excess: float
    n_backcopy: int
    n_bigram: int


def oracle_risks(task: BBTask, tokens: torch.Tensor, logits: torch.Tensor) -> OracleRisks:
    """Backcopy and bigram risks of ``logits`` on ``tokens``, and their excess over the oracle.

    Risk is the *expected* loss under the oracle's next-token distribution given the prefix
    (not the loss on the one sampled next token), so the excess is an exact KL per
    position and is never negative.

    Args:
        task: the BB task that produced ``tokens``.
        tokens: ``[B, T]`` int64.
        logits: ``[B, T, vocab_size]``, the prediction for position ``i+1`` at ``i``.

    Example:
        >>> r = oracle_risks(task, tokens, model(tokens))
        >>> r.backcopy_excess < 1e-3
    """
    if logits.shape[:2] != tokens.shape or logits.shape[-1] != task.vocab_size:
        raise BBTaskError(
            f"logits must be [B, T, {task.vocab_size}] for tokens {tuple(tokens.shape)}, "
            f"got {tuple(logits.shape)}."
        )
    p = task.target_dist(tokens)  # [B, T, V]
    logq = torch.log_softmax(logits.detach().double(), -1)  # [B, T, V]
    # 0 * log 0 counts as 0 both for the entropy and where the model puts -inf mass.
    plogp = torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))
    plogq = torch.where(p > 0, p * logq, torch.zeros_like(p))
    ce = -plogq.sum(-1)  # [B, T]
    ent = -plogp.sum(-1)  # [B, T]
    bc, bg = task.masks(tokens)

    def mean(x: torch.Tensor, m: torch.Tensor) -> float:
        return float(x[m].mean()) if m.any() else float("nan")

    return OracleRisks(
        backcopy_risk=mean(ce, bc),
        backcopy_oracle=mean(ent, bc),
        backcopy_excess=mean(ce - ent, bc),
        bigram_risk=mean(ce, bg),
        bigram_oracle=mean(ent, bg),
        bigram_excess=mean(ce - ent, bg),
        n_backcopy=int(bc.sum()),
        n_bigram=int(bg.sum()),
    )


# -- the slow path, kept as the speed reference ------------------------------------------


def slow_sample(task: BBTask, batch_size: int, seq_len: int, *, seed: int) -> torch.Tensor:
    """The same BB distribution, one token at a time in a Python loop.

    This is how the task is usually written (a ``numpy`` choice per token); it is kept
    only as the baseline that :meth:`BBTask.sample` is benchmarked against. It uses a
    different random stream, so its batches differ from ``sample``'s for the same seed.
    """
    rng = np.random.default_rng(seed)
    bigram = task.bigram.numpy()
    trig = set(task.triggers.tolist())
    first_p = task.unigram.numpy().copy()
    first_p[task.triggers.numpy()] = 0.0
    first_p /= first_p.sum()
    out = []
    for _ in range(batch_size):
        seq = [task.bos, int(rng.choice(task.n_chars, p=first_p))]
        while len(seq) < seq_len:
            if seq[-1] in trig:
                seq.append(seq[-2])
            else:
                seq.append(int(rng.choice(task.n_chars, p=bigram[seq[-1]])))
        out.append(seq)
    return torch.tensor(out, dtype=torch.long)
