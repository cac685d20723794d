"""Which tokens are selected for prediction, and what the model sees there.

Selection follows GR pretrain_helpers.mask (electra-reference §7.1): per sequence a fixed count
k = max(1, round(n_tokens * mask_prob)), at most K = int((mask_prob + 0.005) * L) (19 at L=128); [CLS], [SEP],
[MASK] and padding are never selected. Positions come as a fixed-size [B, K] tensor with 0/1 weights, so the
generator's vocabulary projection runs on B*K rows instead of B*L (the "masked head" speed-up, ~1.7x on CPU).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

# ELECTRA style (GR code, Paper §2): 85% [MASK], 15% left unchanged, no random tokens.
# BERT style (Paper §3.5 "BERT"): 80% [MASK], 10% random token, 10% unchanged.
MASK_STYLES: dict[str, tuple[float, float]] = {"electra": (0.85, 0.0), "bert": (0.8, 0.1)}  # (p_mask, p_random)


@dataclass
class Selection:
    positions: Tensor  # [B, K] selected positions (0 where unused)
    weights: Tensor  # [B, K] 1.0 for a real selection, 0.0 for padding of the K slots
    targets: Tensor  # [B, K] original token ids at the positions


def max_predictions(mask_prob: float, seq_len: int) -> int:
    return max(1, int((mask_prob + 0.005) * seq_len))  # GR max_predictions_per_seq


def select(input_ids: Tensor, attention_mask: Tensor, special_ids: Tensor, mask_prob: float,
           generator: torch.Generator | None = None) -> Selection:
    """Uniformly choose k positions per sequence among the non-special, non-pad tokens."""
    batch, seq_len = input_ids.shape
    k_max = max_predictions(mask_prob, seq_len)
    eligible = attention_mask.bool() & ~torch.isin(input_ids, special_ids)  # [B, L]
    n_tokens = eligible.sum(1)  # [B]
    k = torch.clamp(torch.round(n_tokens.float() * mask_prob).long(), min=1, max=k_max)  # [B]
    k = torch.minimum(k, n_tokens)
    scores = torch.rand(batch, seq_len, generator=generator, device=input_ids.device)
    scores = scores.masked_fill(~eligible, -1.0)
    top = scores.topk(k_max, dim=1)  # a uniformly random order of the eligible positions
    used = (torch.arange(k_max, device=input_ids.device)[None] < k[:, None]) & (top.values >= 0)  # [B, K]
    positions = top.indices  # distinct within a row: an unused slot points at an unselected position
    targets = input_ids.gather(1, positions)
    return Selection(positions=positions, weights=used.float(), targets=targets)


def apply_mask(input_ids: Tensor, sel: Selection, mask_id: int, style: str, vocab_size: int,
               generator: torch.Generator | None = None) -> Tensor:
    """The masked input: [MASK] (and, BERT style, random tokens) at the selected positions."""
    p_mask, p_random = MASK_STYLES[style]
    u = torch.rand(sel.positions.shape, generator=generator, device=input_ids.device)  # [B, K]
    new = sel.targets.clone()
    new = torch.where(u < p_mask, torch.full_like(new, mask_id), new)
    if p_random:
        rand_ids = torch.randint(vocab_size, new.shape, generator=generator, device=input_ids.device)
        new = torch.where((u >= p_mask) & (u < p_mask + p_random), rand_ids, new)
    return scatter_selected(input_ids, sel, new)


def scatter_selected(input_ids: Tensor, sel: Selection, values: Tensor) -> Tensor:
    """Write `values` [B, K] at the used selected positions; unused slots leave the input alone."""
    values = torch.where(sel.weights.bool(), values, sel.targets)
    return input_ids.scatter(1, sel.positions, values)
