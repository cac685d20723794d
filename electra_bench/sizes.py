"""Model size presets and the generator scaling rule.

Presets follow Paper Table 6 (small, base, large) plus two CPU-scale sizes (tiny, mini) that keep the paper's
shape (head size 64 where possible, FFN = 4 x hidden, factorised embedding <= hidden).
The generator rule is the official one (GR run_pretraining.py `get_generator_config`, electra-reference.md §2.2):
width (hidden, FFN, heads) scales by `generator_size`; depth does not.
"""
from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Dims:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    embedding: int


PRESETS: dict[str, Dims] = {
    # CPU-scale sizes: not in the paper. tiny is the size the feasibility run used (hidden 128 x 4 layers).
    "tiny": Dims(hidden=128, layers=4, heads=2, intermediate=512, embedding=128),
    "mini": Dims(hidden=256, layers=4, heads=4, intermediate=1024, embedding=128),
    # Paper Table 6.
    "small": Dims(hidden=256, layers=12, heads=4, intermediate=1024, embedding=128),
    "base": Dims(hidden=768, layers=12, heads=12, intermediate=3072, embedding=768),
    "large": Dims(hidden=1024, layers=24, heads=16, intermediate=4096, embedding=1024),
}


def resolve_dims(size: str, **overrides: int | None) -> Dims:
    """The preset with any non-None dimension overridden (field names as in `Dims`)."""
    dims = PRESETS[size]
    given = {k: v for k, v in overrides.items() if v is not None}
    dims = replace(dims, **given)
    if dims.hidden % dims.heads:
        raise ValueError(f"hidden size {dims.hidden} is not divisible by {dims.heads} heads")
    return dims


def generator_dims(disc: Dims, fraction: float) -> Dims:
    """Generator dims for a fraction of the discriminator's width (Paper §3.2, Table 6: 1/4 for Small).

    Official rule: hidden = round(f*H), FFN = round(f*FFN) (= 4*hidden for 4x presets), heads = max(1, hidden // 64),
    same depth. For CPU-scale models with fewer than 64 dims per head we keep the discriminator's head size instead
    (heads scale with width), so a 1/4 generator of a 128-wide/2-head model has 32 dims and 1 head, not a 0-head
    model.
    The embedding size is the discriminator's: embeddings are shared (§3.2) and projected to the generator width.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"generator_size must be in (0, 1], got {fraction}")
    hidden = max(1, round(fraction * disc.hidden))
    head_size = min(64, disc.hidden // disc.heads)
    heads = max(1, hidden // head_size)
    while hidden % heads:
        heads -= 1
    intermediate = max(1, round(fraction * disc.intermediate))
    return Dims(hidden=hidden, layers=disc.layers, heads=heads, intermediate=intermediate, embedding=disc.embedding)
