"""Pre-training objectives (Paper §2 and Table 5), each wrapping injected networks.

    ELECTRA         L = L_MLM(G) + lambda * L_Disc(D), D loss over every non-pad token     (Paper eq. 1, §2)
    ELECTRA 15%     the same, D loss only over the selected ~15%                            (Table 5)
    Replace MLM     selected positions get G samples instead of [MASK]; MLM loss on them     (Table 5)
    All-Tokens MLM  G samples as above; predict the identity of every token, with a copy
                    mechanism p = D*1[x = input] + (1 - D)*softmax                           (Table 5)
    BERT MLM        80/10/10 masking, MLM loss on the selected positions                    (Table 5 "BERT")

Every objective returns `PretrainOutput` with the loss and the counts the RTD metrics are built from.
The discriminator label is 1 ("replaced") only where the sample differs from the original: a generator that
samples the right token produces a "real" token (Paper §2).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import PreTrainedModel

from .generators import MaskedLMGenerator, Proposal, masked_mean
from .masking import Selection, apply_mask, scatter_selected, select


@dataclass
class PretrainOutput:
    loss: Tensor  # what the optimiser minimises
    gen_loss: Tensor  # generator (or MLM) loss, for logging
    disc_loss: Tensor  # discriminator loss (0 for MLM objectives)
    stats: dict[str, Tensor] = field(default_factory=dict)  # counts summed over the batch (see rtd_counts)
    disc_probs: Tensor | None = None  # [N] P(replaced) at the scored tokens (eval: AUC)
    disc_labels: Tensor | None = None  # [N] 1 = replaced
    disc_tokens: Tensor | None = None  # [N] the (possibly replaced) token ids D saw there (context-free baseline)


@dataclass
class Batch:
    input_ids: Tensor  # [B, L]
    attention_mask: Tensor  # [B, L]
    token_type_ids: Tensor  # [B, L]
    padded: bool = True  # False only when the host knows no position is padding (pretrain.load_batch)

    def split(self, size: int) -> list[Batch]:
        """Micro-batches of `size` sequences (gradient accumulation)."""
        parts = zip(self.input_ids.split(size), self.attention_mask.split(size), self.token_type_ids.split(size))
        return [Batch(ids, mask, types, self.padded) for ids, mask, types in parts]

    def model_mask(self, implementation: str) -> Tensor | None:
        """The mask handed to a `transformers` encoder: 4-D, which it uses as is, because given the 2-D mask it
        checks `mask.all()` to skip masking, a device-to-host read per forward (issue 15). None when there is no
        padding (SDPA can then use its flash kernel). Eager: the additive fp32 mask transformers would build."""
        if not self.padded:
            return None
        keep = self.attention_mask.bool()[:, None, None, :]  # [B, 1, 1, L]
        if implementation != "eager":  # sdpa: a boolean mask, True = attend
            return keep
        return torch.zeros(keep.shape, device=keep.device).masked_fill_(~keep, torch.finfo(torch.float32).min)


@dataclass(frozen=True)
class Vocab:
    size: int
    mask_id: int
    special_ids: tuple[int, ...]


def rtd_counts(logits: Tensor, labels: Tensor, weights: Tensor) -> dict[str, Tensor]:
    """Confusion counts of replaced-token detection (positive = replaced) over weighted positions."""
    pred = (logits > 0).float()
    w = weights.float()
    return {"disc_tp": (pred * labels * w).sum(), "disc_fp": (pred * (1 - labels) * w).sum(),
            "disc_fn": ((1 - pred) * labels * w).sum(), "disc_tn": ((1 - pred) * (1 - labels) * w).sum()}


def gen_counts(proposal: Proposal, sel: Selection) -> dict[str, Tensor]:
    w = sel.weights
    out = {"n_selected": w.sum(), "sampled_correct": ((proposal.samples == sel.targets).float() * w).sum()}
    if proposal.logits is not None:
        out["gen_correct"] = ((proposal.logits.argmax(-1) == sel.targets).float() * w).sum()
    return out


class _Objective(nn.Module):
    def __init__(self, vocab: Vocab, mask_prob: float, mask_style: str):
        super().__init__()
        self.vocab, self.mask_prob, self.mask_style = vocab, mask_prob, mask_style
        self.register_buffer("special_ids", torch.tensor(vocab.special_ids), persistent=False)

    @functools.cached_property
    def attention(self) -> str:
        """The encoders' attention implementation ("eager" | "sdpa"), which decides the form of the model mask."""
        return next(m.config._attn_implementation for m in self.modules() if isinstance(m, PreTrainedModel))

    def select_and_mask(self, batch: Batch, rng: torch.Generator | None) -> tuple[Selection, Tensor]:
        sel = select(batch.input_ids, batch.attention_mask, self.special_ids, self.mask_prob, rng)
        masked = apply_mask(batch.input_ids, sel, self.vocab.mask_id, self.mask_style, self.vocab.size, rng)
        return sel, masked

    def encoder(self) -> nn.Module:
        """The network fine-tuning starts from (saved with save_pretrained)."""
        raise NotImplementedError


class ElectraObjective(_Objective):
    """Replaced-token detection. `all_tokens=False` is "ELECTRA 15%" (D loss on the selected positions only)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, vocab: Vocab, mask_prob: float,
                 mask_style: str, disc_weight: float, gen_weight: float = 1.0, all_tokens: bool = True):
        super().__init__(vocab, mask_prob, mask_style)
        self.generator, self.discriminator = generator, discriminator  # G: MaskedLM/Unigram; D: ElectraForPreTraining
        self.disc_weight, self.gen_weight, self.all_tokens = disc_weight, gen_weight, all_tokens
        self.train_generator = True  # False: G only proposes (two-stage training, stage two)

    def encoder(self) -> nn.Module:
        return self.discriminator

    def corrupt(self, batch: Batch, rng: torch.Generator | None) -> tuple[Selection, Proposal, Tensor, Tensor]:
        sel, masked = self.select_and_mask(batch, rng)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_generator):
            proposal = self.generator(masked, batch.model_mask(self.attention), batch.token_type_ids, sel, rng)
        corrupted = scatter_selected(batch.input_ids, sel, proposal.samples.detach())  # [B, L]
        labels = (corrupted != batch.input_ids).float()  # [B, L]; a correct sample counts as real
        return sel, proposal, corrupted, labels

    def disc_scores(self, batch: Batch, sel: Selection, corrupted: Tensor, labels: Tensor):
        logits = self.discriminator(input_ids=corrupted, attention_mask=batch.model_mask(self.attention),
                                    token_type_ids=batch.token_type_ids).logits.float()  # [B, L]
        if self.all_tokens:
            weights = batch.attention_mask.float()  # every non-pad token, [CLS]/[SEP] included (GR)
        else:
            weights = torch.zeros_like(logits).scatter(1, sel.positions, sel.weights)
        bce = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")  # [B, L]
        return logits, weights, bce

    def forward(self, batch: Batch, rng: torch.Generator | None = None, keep_scores: bool = False):
        sel, proposal, corrupted, labels = self.corrupt(batch, rng)
        logits, weights, bce = self.disc_scores(batch, sel, corrupted, labels)
        disc_loss = masked_mean(bce, weights)
        loss = self.disc_weight * disc_loss
        if self.train_generator:
            loss = loss + self.gen_weight * proposal.mlm_loss
        stats = {**gen_counts(proposal, sel), **rtd_counts(logits, labels, weights),
                 "n_scored": weights.sum(), "n_replaced": (labels * weights).sum()}
        out = PretrainOutput(loss, proposal.mlm_loss.detach(), disc_loss.detach(), stats)
        if keep_scores:
            keep = weights.bool()
            out.disc_probs, out.disc_labels = torch.sigmoid(logits[keep]).detach(), labels[keep]
            out.disc_tokens = corrupted[keep]
        return out


class MLMObjective(_Objective):
    """BERT's masked LM (Table 5 "BERT"): the encoder is an ElectraForMaskedLM at discriminator size.

    With `generator` set it is Replace MLM: selected positions hold generator samples instead of [MASK]."""

    def __init__(self, model: MaskedLMGenerator, vocab: Vocab, mask_prob: float, mask_style: str,
                 generator: nn.Module | None = None, gen_weight: float = 1.0):
        super().__init__(vocab, mask_prob, mask_style)
        self.model, self.generator, self.gen_weight = model, generator, gen_weight

    def encoder(self) -> nn.Module:
        return self.model.model

    def forward(self, batch: Batch, rng: torch.Generator | None = None, keep_scores: bool = False):
        sel, masked = self.select_and_mask(batch, rng)
        gen_loss = masked.new_zeros((), dtype=torch.float32)
        stats: dict[str, Tensor] = {}
        if self.generator is not None:  # Replace MLM
            proposal = self.generator(masked, batch.model_mask(self.attention), batch.token_type_ids, sel, rng)
            masked = scatter_selected(batch.input_ids, sel, proposal.samples.detach())
            gen_loss = proposal.mlm_loss
            stats["sampled_correct"] = ((proposal.samples == sel.targets).float() * sel.weights).sum()
        logits, _ = self.model.logits_at(masked, batch.model_mask(self.attention), batch.token_type_ids, sel.positions)
        ce = F.cross_entropy(logits.float().flatten(0, 1), sel.targets.flatten(), reduction="none")
        mlm_loss = masked_mean(ce.view_as(sel.weights), sel.weights)
        stats.update(n_selected=sel.weights.sum(),
                     gen_correct=((logits.argmax(-1) == sel.targets).float() * sel.weights).sum())
        zero = mlm_loss.new_zeros(())
        return PretrainOutput(mlm_loss + self.gen_weight * gen_loss, mlm_loss.detach(), zero, stats)


class AllTokensMLMObjective(_Objective):
    """All-Tokens MLM (Table 5): predict every token's identity from the generator-corrupted input.

    Copy mechanism: a sigmoid copy probability D_t; p(x_t) = D_t * 1[x_t = input_t] + (1 - D_t) * softmax_t(x_t)."""

    def __init__(self, model: MaskedLMGenerator, generator: nn.Module, vocab: Vocab, mask_prob: float,
                 mask_style: str, gen_weight: float = 1.0):
        super().__init__(vocab, mask_prob, mask_style)
        self.model, self.generator, self.gen_weight = model, generator, gen_weight
        hidden = model.model.config.hidden_size
        self.copy_head = nn.Linear(hidden, 1)

    def encoder(self) -> nn.Module:
        return self.model.model

    def forward(self, batch: Batch, rng: torch.Generator | None = None, keep_scores: bool = False):
        sel, masked = self.select_and_mask(batch, rng)
        proposal = self.generator(masked, batch.model_mask(self.attention), batch.token_type_ids, sel, rng)
        corrupted = scatter_selected(batch.input_ids, sel, proposal.samples.detach())
        mlm = self.model.model
        hidden = mlm.electra(input_ids=corrupted, attention_mask=batch.model_mask(self.attention),
                             token_type_ids=batch.token_type_ids).last_hidden_state  # [B, L, H]
        log_soft = torch.log_softmax(mlm.generator_lm_head(mlm.generator_predictions(hidden)).float(), -1)
        log_soft_orig = log_soft.gather(-1, batch.input_ids[..., None]).squeeze(-1)  # [B, L]
        copy_logit = self.copy_head(hidden).squeeze(-1).float()  # [B, L]
        same = (corrupted == batch.input_ids)
        # log p = log(D*1[same] + (1-D)*softmax), computed stably in log space
        log_p = torch.where(same, torch.logaddexp(F.logsigmoid(copy_logit), F.logsigmoid(-copy_logit) + log_soft_orig),
                            F.logsigmoid(-copy_logit) + log_soft_orig)
        weights = batch.attention_mask.float()
        loss_tokens = masked_mean(-log_p, weights)
        stats = {**gen_counts(proposal, sel), "n_scored": weights.sum(),
                 "n_replaced": ((~same).float() * weights).sum()}
        loss = loss_tokens + self.gen_weight * proposal.mlm_loss
        return PretrainOutput(loss, proposal.mlm_loss.detach(), loss_tokens.detach(), stats)
