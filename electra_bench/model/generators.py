"""Generators: what proposes the replacement tokens for the discriminator (Paper §2, Fig. 3).

- `MaskedLMGenerator`: a small masked LM (a `transformers` ElectraForMaskedLM), trained by maximum likelihood.
  Its vocabulary projection runs only at the selected positions ([B, K] rows, never [B, L]).
- `UnigramGenerator`: samples from corpus token frequencies (Fig. 3 "unigram"); nothing to train.
Samples are drawn in fp32 with no gradient: sampling is discrete, so nothing flows back from D into G.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import ElectraForMaskedLM

from .masking import Selection


@dataclass
class Proposal:
    samples: Tensor  # [B, K] sampled token ids at the selected positions
    mlm_loss: Tensor  # scalar: mean cross-entropy over the selected positions (0 for unigram)
    logits: Tensor | None  # [B, K, V] generator logits at the selected positions (None for unigram)
    log_prob_samples: Tensor | None  # [B, K] log p_G(sample), with gradient (for REINFORCE, App. F)
    hidden: Tensor | None  # [B, K, Hg] generator hidden states at the positions (REINFORCE baseline)


def sample_from_logits(logits: Tensor, temperature: float, generator: torch.Generator | None = None) -> Tensor:
    """Inverse-CDF sampling in fp32 (RW and lucidrains#7: low-precision Gumbel sampling gives NaNs/bias).

    0.05 s/step vs 0.22 s for Gumbel-max on CPU (cpu-scale-feasibility.md)."""
    probs = torch.softmax(logits.detach().float() / temperature, dim=-1)  # [..., V]
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf.shape[:-1] + (1,), generator=generator, device=logits.device) * cdf[..., -1:]
    return torch.searchsorted(cdf, u).squeeze(-1).clamp_(max=logits.shape[-1] - 1)


def masked_mean(values: Tensor, weights: Tensor) -> Tensor:
    return (values * weights).sum() / weights.sum().clamp(min=1.0)


class MaskedLMGenerator(nn.Module):
    def __init__(self, model: ElectraForMaskedLM, temperature: float = 1.0):
        super().__init__()
        self.model = model
        self.temperature = temperature

    def logits_at(self, input_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor,
                  positions: Tensor) -> tuple[Tensor, Tensor]:
        """LM logits [B, K, V] and hidden states [B, K, H] at `positions` only."""
        hidden = self.model.electra(input_ids=input_ids, attention_mask=attention_mask,
                                    token_type_ids=token_type_ids).last_hidden_state  # [B, L, H]
        picked = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))  # [B, K, H]
        logits = self.model.generator_lm_head(self.model.generator_predictions(picked))  # [B, K, V]
        return logits, picked

    def forward(self, masked_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor, sel: Selection,
                rng: torch.Generator | None = None) -> Proposal:
        logits, picked = self.logits_at(masked_ids, attention_mask, token_type_ids, sel.positions)
        ce = F.cross_entropy(logits.float().flatten(0, 1), sel.targets.flatten(), reduction="none")
        mlm_loss = masked_mean(ce.view_as(sel.weights), sel.weights)
        samples = sample_from_logits(logits, self.temperature, rng)
        log_prob = torch.log_softmax(logits.float(), -1).gather(-1, samples[..., None]).squeeze(-1)
        return Proposal(samples, mlm_loss, logits, log_prob, picked)


class UnigramGenerator(nn.Module):
    """Samples replacements from the corpus unigram distribution (Fig. 3 left, "unigram" point)."""

    def __init__(self, counts: Tensor):
        super().__init__()
        probs = counts.double().clamp(min=0)
        self.register_buffer("probs", (probs / probs.sum()).float())

    def forward(self, masked_ids: Tensor, attention_mask: Tensor | None, token_type_ids: Tensor, sel: Selection,
                rng: torch.Generator | None = None) -> Proposal:
        flat = torch.multinomial(self.probs, sel.positions.numel(), replacement=True, generator=rng)
        samples = flat.view_as(sel.positions).to(masked_ids.device)
        zero = masked_ids.new_zeros((), dtype=torch.float32)
        return Proposal(samples, zero, None, None, None)
