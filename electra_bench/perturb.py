"""Seeded perturbations of dev sets, for the robustness evaluation (issue #9; the protocol is in robustness.py).

The claim under test: an encoder pre-trained to detect replaced tokens should be hurt less by corrupted input than
one pre-trained as a masked LM. Each kind is one entry of PERTURBATIONS (kind -> Perturbation):

- random_token  word-pieces -> tokens drawn uniformly from the non-special vocabulary;
- generator     word-pieces, masked together per example, refilled with samples of a pre-trained ELECTRA generator
                (temperature 1): plausible in-context substitutions, the corruption ELECTRA's discriminator saw;
- char_typo     words (>= 2 characters, with a letter) -> one character insertion, deletion, swap or substitution;
- entity_swap   entity mentions (tagging tasks) -> another training-set mention of the same type, tags rewritten
                B-X I-X ... for the new mention's length.

What every kind keeps: special tokens ([PAD] [UNK] [CLS] [SEP] [MASK]) are never changed nor proposed; a changed unit
really changes (a replacement equal to the original is excluded); for tagging every word keeps exactly one label
(word-piece kinds change ids in place; word kinds never empty a word), so word/label alignment stays valid.

Determinism: a kind draws from `rng_for(seed, kind)`. The units changed at rate r are the round(r * N) of the N
perturbable units with the smallest uniform draw, so the achieved rate is exact up to rounding and the sets are
nested across rates; every later draw is one per unit whatever the rate, so for the three context-free kinds a
unit changed at rate r is changed the same way at every larger rate (a smoother metric-vs-rate curve).
Word-level functions take and return rows in `tasks.load_split`'s conventions; piece-level ones take encoded ids.
"""
from __future__ import annotations

import string
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .registry import Registry

if TYPE_CHECKING:  # annotations only: the import is deferred to the functions that compute
    import numpy as np

Row = dict[str, Any]
TEXT_COLUMNS = ("tokens", "text_a", "text_b")  # tagging rows carry `tokens`, classification rows the texts
LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class Context:
    """What a perturbation may read besides the examples (robustness.context builds it once per dev set)."""

    special_ids: tuple[int, ...]
    vocab_size: int
    labels: tuple[str, ...] = ()  # tagging: tag names in id order
    mentions: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)  # type -> distinct train mentions
    generator: Any = None  # a GeneratorSampler, for the `generator` kind


@dataclass(frozen=True)
class Perturbation:
    name: str
    level: Literal["words", "pieces"]  # words: fn(rows, rate, rng, ctx) -> rows (re-encoded by the caller);
    #                                    pieces: fn(input_ids, token_type_ids, rate, rng, ctx) -> input_ids
    task_kinds: tuple[str, ...]  # the task kinds (TaskSpec.kind) it applies to
    fn: Callable


PERTURBATIONS: Registry[Perturbation] = Registry("perturbation kind")
ALL_TASK_KINDS = ("classification", "regression", "tagging")


def register(name: str, level: str, task_kinds: tuple[str, ...] = ALL_TASK_KINDS):
    def deco(fn: Callable) -> Callable:
        PERTURBATIONS.register(name, Perturbation(name, level, task_kinds, fn))
        return fn
    return deco


def rng_for(seed: int, kind: str) -> np.random.Generator:
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    return np.random.default_rng([seed, zlib.crc32(kind.encode())])


def choose(n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Bool mask [n] of the round(rate * n) units with the smallest uniform draw (nested across rates)."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    chosen = np.zeros(n, dtype=bool)
    chosen[np.argsort(rng.random(n), kind="stable")[:round(rate * n)]] = True
    return chosen


def other_index(u: np.ndarray, n: int, exclude: np.ndarray) -> np.ndarray:
    """A uniform index in [0, n) other than `exclude` (-1: none excluded) per uniform draw in `u`; n >= 2 when
    something is excluded."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    has = exclude >= 0
    j = np.floor(u * (n - has)).astype(np.int64)
    return j + (has & (j >= exclude))


# --------------------------------------------------------------------------------------------- word-pieces

def _piece_units(ids: Sequence[Sequence[int]], special: Sequence[int]) -> tuple[np.ndarray, ...]:
    """(example index, position, id) of every perturbable word-piece, in dataset order."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    special = set(special)
    units = [(i, t, tok) for i, seq in enumerate(ids) for t, tok in enumerate(seq) if tok not in special]
    arr = np.array(units, dtype=np.int64).reshape(-1, 3)
    return arr[:, 0], arr[:, 1], arr[:, 2]


@register("random_token", "pieces")
def random_token(ids, types, rate: float, rng: np.random.Generator, ctx: Context) -> list[list[int]]:
    """Replace word-pieces with tokens drawn uniformly from the non-special vocabulary (never the original)."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    rows, pos, vals = _piece_units(ids, ctx.special_ids)
    chosen = choose(len(vals), rate, rng)
    pool = np.setdiff1d(np.arange(ctx.vocab_size), ctx.special_ids)  # sorted; every original is in it
    new = pool[other_index(rng.random(len(vals)), len(pool), np.searchsorted(pool, vals))]
    out = [list(seq) for seq in ids]
    for i, t, v in zip(rows[chosen], pos[chosen], new[chosen]):
        out[i][t] = int(v)
    return out


@register("generator", "pieces")
def generator_tokens(ids, types, rate: float, rng: np.random.Generator, ctx: Context) -> list[list[int]]:
    """Mask the chosen word-pieces of each example together and refill them with generator samples."""
    if ctx.generator is None:
        raise ValueError("the generator perturbation needs a generator (robustness.generator_cell)")
    rows, pos, _ = _piece_units(ids, ctx.special_ids)
    chosen = choose(len(rows), rate, rng)
    positions: list[list[int]] = [[] for _ in ids]
    for i, t in zip(rows[chosen], pos[chosen]):
        positions[i].append(int(t))
    return ctx.generator.refill(ids, types, positions, int(rng.integers(2**31)))


class GeneratorSampler:
    """Refills positions with samples of a masked-LM generator (a transformers ElectraForMaskedLM in eval mode).

    All chosen positions of an example are masked at once, as in pre-training; specials and the original token
    are excluded from the sampled distribution. Batches go in dataset order with one torch generator, so a seed
    gives the same samples on the same device (CPU and CUDA kernels may differ in the last bits)."""

    def __init__(self, model, mask_id: int, special_ids: Sequence[int], device: str = "cpu", batch_size: int = 64):
        self.model, self.mask_id, self.special_ids = model, mask_id, list(special_ids)
        self.device, self.batch_size = device, batch_size

    def refill(self, ids, types, positions: list[list[int]], seed: int) -> list[list[int]]:
        import torch

        from .model.generators import sample_from_logits  # deferred with torch: word-level kinds never need it

        rng = torch.Generator(device=self.device).manual_seed(seed)
        out = [list(seq) for seq in ids]
        todo = [i for i, p in enumerate(positions) if p]
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            x = torch.zeros(len(batch), max(len(ids[i]) for i in batch), dtype=torch.long)
            tt = torch.zeros_like(x)
            for j, i in enumerate(batch):
                x[j, :len(ids[i])], tt[j, :len(ids[i])] = torch.tensor(ids[i]), torch.tensor(types[i])
            b = torch.tensor([j for j, i in enumerate(batch) for _ in positions[i]])
            t = torch.tensor([p for i in batch for p in positions[i]])
            original = x[b, t].clone()  # [K]
            x[b, t] = self.mask_id
            dev = {"device": self.device}
            with torch.no_grad():
                hidden = self.model.electra(input_ids=x.to(**dev), attention_mask=(x != 0).long().to(**dev),
                                            token_type_ids=tt.to(**dev)).last_hidden_state  # [B, L, H]
                picked = hidden[b.to(**dev), t.to(**dev)]  # [K, H]
                logits = self.model.generator_lm_head(self.model.generator_predictions(picked)).float()  # [K, V]
            logits[:, self.special_ids] = -torch.inf
            logits[torch.arange(len(t), **dev), original.to(**dev)] = -torch.inf
            for bj, tj, v in zip(b.tolist(), t.tolist(), sample_from_logits(logits, 1.0, rng).tolist()):
                out[batch[bj]][tj] = v
        return out


# -------------------------------------------------------------------------------------------------- words

def _split_words(row: Row) -> dict[str, list[str]]:
    return {c: list(row[c]) if c == "tokens" else row[c].split(" ") for c in TEXT_COLUMNS if c in row}


def typo(word: str, op: int, u: float, letter: int) -> str:
    """One edit of `word` (len >= 2): op 0 insert, 1 delete, 2 swap two different neighbours, 3 substitute; `u`
    in [0, 1) picks the place. Never empties the word, always changes it (a swap of "aa" becomes a substitution)."""
    n = len(word)
    if op == 0:
        i = int(u * (n + 1))
        return word[:i] + LETTERS[letter] + word[i:]
    if op == 1:
        i = int(u * n)
        return word[:i] + word[i + 1:]
    pairs = [i for i in range(n - 1) if word[i] != word[i + 1]] if op == 2 else []
    if pairs:
        i = pairs[int(u * len(pairs))]
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    i = int(u * n)
    c = LETTERS[letter] if LETTERS[letter] != word[i].lower() else LETTERS[(letter + 1) % 26]
    return word[:i] + (c.upper() if word[i].isupper() else c) + word[i + 1:]


@register("char_typo", "words")
def char_typo(rows: list[Row], rate: float, rng: np.random.Generator, ctx: Context) -> list[Row]:
    """One character edit in a fraction of the words that have >= 2 characters and a letter."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    split = [_split_words(r) for r in rows]
    units = [(i, c, k) for i, cols in enumerate(split) for c, words in cols.items() for k, w in enumerate(words)
             if len(w) >= 2 and any(ch.isalpha() for ch in w)]
    chosen = choose(len(units), rate, rng)
    ops, us, letters = rng.integers(4, size=len(units)), rng.random(len(units)), rng.integers(26, size=len(units))
    for j in np.flatnonzero(chosen):
        i, c, k = units[j]
        split[i][c][k] = typo(split[i][c][k], int(ops[j]), float(us[j]), int(letters[j]))
    return [{**r, **{c: w if c == "tokens" else " ".join(w) for c, w in cols.items()}} for r, cols in zip(rows, split)]


def mentions(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """(start, end, type) of the entity spans of a tag sequence, read as conlleval does: a span starts at B-X or at an
    I-X that does not continue a span of type X, and takes in the I-X that follow."""
    spans, start, typ = [], None, ""
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, t = tag.partition("-")
        if start is not None and not (prefix == "I" and t == typ):
            spans.append((start, i, typ))
            start = None
        if start is None and prefix in ("B", "I"):
            start, typ = i, t
    return spans


def train_mentions(rows: list[Row], labels: Sequence[str]) -> dict[str, list[tuple[str, ...]]]:
    """Entity type -> its distinct mentions (word tuples) in tagged rows, sorted (a deterministic pool)."""
    found: dict[str, set[tuple[str, ...]]] = {}
    for r in rows:
        for s, e, typ in mentions([labels[t] for t in r["tags"]]):
            found.setdefault(typ, set()).add(tuple(r["tokens"][s:e]))
    return {typ: sorted(forms) for typ, forms in sorted(found.items())}


@register("entity_swap", "words", ("tagging",))
def entity_swap(rows: list[Row], rate: float, rng: np.random.Generator, ctx: Context) -> list[Row]:
    """Replace a fraction of entity mentions by a different training-set mention of the same type."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    tag_id = {name: i for i, name in enumerate(ctx.labels)}
    index = {typ: {form: k for k, form in enumerate(forms)} for typ, forms in ctx.mentions.items()}
    units = []  # (row, start, end, type, index of the original form in the pool or -1)
    for i, r in enumerate(rows):
        for s, e, typ in mentions([ctx.labels[t] for t in r["tags"]]):
            k = index.get(typ, {}).get(tuple(r["tokens"][s:e]), -1)
            if len(index.get(typ, ())) - (k >= 0) >= 1:  # some other mention of this type exists
                units.append((i, s, e, typ, k))
    chosen = choose(len(units), rate, rng)
    us = rng.random(len(units))
    out = [{**r, "tokens": list(r["tokens"]), "tags": list(r["tags"])} for r in rows]
    for j in reversed(np.flatnonzero(chosen)):  # right to left, so earlier spans of a row keep their positions
        i, s, e, typ, k = units[j]
        forms = ctx.mentions[typ]
        new = forms[int(other_index(us[j:j + 1], len(forms), np.array([k]))[0])]
        out[i]["tokens"][s:e] = list(new)
        out[i]["tags"][s:e] = [tag_id[f"B-{typ}"]] + [tag_id[f"I-{typ}"]] * (len(new) - 1)
    return out
