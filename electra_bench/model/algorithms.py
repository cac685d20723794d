"""Training algorithms for generator + discriminator (Paper §3.2, Figure 3 right, Appendix F).

    joint        minimise L_MLM(G) + lambda * L_Disc(D) together; no gradient from D into G (the default)
    two_stage    train G alone with L_MLM for the first part of training; then initialise D's encoder from G's
                 (equal sizes) and train D alone with L_Disc while G is frozen. Without that initialisation D
                 "would sometimes fail to learn at all beyond the majority class" (§3.2).
    adversarial  G is trained with REINFORCE to maximise D's loss on the tokens it replaced, with a learned
                 baseline (App. F); D is trained as usual. Not a GAN on images: the samples are discrete tokens.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .generators import masked_mean
from .objectives import Batch, ElectraObjective, PretrainOutput, gen_counts, rtd_counts


class Algorithm:
    name = "joint"

    def __init__(self, objective: nn.Module, temperature_end: float | None = None):
        self.objective = objective
        # `pretrain.temperature_end`: the generator's sampling temperature goes linearly from its training value
        # at the first step to this at the last (issue 14 lever: easy T=2 fakes early, the paper's T=1 ones late)
        sampler = getattr(objective, "generator", None)
        self.anneal = None if temperature_end is None else (sampler, sampler.temperature, temperature_end)

    def on_step(self, step: int, total_steps: int) -> None:
        """Called before each step: sets the annealed sampling temperature (two_stage also switches stage)."""
        if self.anneal is not None:
            sampler, start, end = self.anneal
            sampler.temperature = start + (end - start) * min(1.0, step / max(1, total_steps - 1))

    def loss(self, batch: Batch, rng: torch.Generator | None) -> PretrainOutput:
        return self.objective(batch, rng=rng)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class TwoStage(Algorithm):
    name = "two_stage"

    def __init__(self, objective: ElectraObjective, switch_fraction: float, temperature_end: float | None = None):
        super().__init__(objective, temperature_end)
        self.switch_fraction, self.stage = switch_fraction, 1

    def on_step(self, step: int, total_steps: int) -> None:
        super().on_step(step, total_steps)
        if self.stage == 1 and step >= round(self.switch_fraction * total_steps):
            self.start_stage_two()

    def start_stage_two(self) -> None:
        """D starts from G (equal sizes, §3.2), then G is frozen: it only proposes replacements. G gets its own
        copy of whatever it shares with D (tied embeddings, or the whole body with tying "all") and its
        parameters stop requiring gradients, so D's updates of the shared tables no longer move G (before
        issue 14 G's tied embeddings kept training through D's loss)."""
        obj = self.objective
        g_body, d_body = obj.generator.model.electra, obj.discriminator.electra
        if g_body is not d_body:
            d_body.load_state_dict(g_body.state_dict())
        # deepcopy keeps G's own ties (input embeddings = output projection) inside the copy
        obj.generator.model = copy.deepcopy(obj.generator.model).requires_grad_(False)
        obj.train_generator = False
        self.stage = 2

    def loss(self, batch: Batch, rng: torch.Generator | None) -> PretrainOutput:
        obj = self.objective
        if self.stage == 2:
            return obj(batch, rng=rng)
        sel, masked = obj.select_and_mask(batch, rng)
        proposal = obj.generator(masked, batch.model_mask(obj.attention), batch.token_type_ids, sel, rng)
        zero = proposal.mlm_loss.new_zeros(())
        return PretrainOutput(proposal.mlm_loss, proposal.mlm_loss.detach(), zero, gen_counts(proposal, sel))

    def state_dict(self) -> dict:
        return {"stage": self.stage}

    def load_state_dict(self, state: dict) -> None:
        if state.get("stage") == 2 and self.stage == 1:
            self.start_stage_two()


class Adversarial(Algorithm):
    name = "adversarial"

    def __init__(self, objective: ElectraObjective, temperature_end: float | None = None):
        super().__init__(objective, temperature_end)
        hidden = objective.generator.model.config.hidden_size
        # learned baseline b(h_t) for the REINFORCE reward (App. F); part of the objective so it is optimised
        objective.add_module("reinforce_baseline", nn.Linear(hidden, 1))

    def loss(self, batch: Batch, rng: torch.Generator | None) -> PretrainOutput:
        obj = self.objective
        sel, proposal, corrupted, labels = obj.corrupt(batch, rng)
        logits, weights, bce = obj.disc_scores(batch, sel, corrupted, labels)
        disc_loss = masked_mean(bce, weights)
        # reward at each selected position: D's loss on the token G put there, if G replaced it (App. F)
        replaced = labels.gather(1, sel.positions) * sel.weights  # [B, K]
        reward = bce.gather(1, sel.positions).detach() * replaced  # [B, K]
        baseline = obj.reinforce_baseline(proposal.hidden.detach()).squeeze(-1).float()  # [B, K]
        advantage = (reward - baseline).detach()
        policy_loss = -masked_mean(advantage * proposal.log_prob_samples, sel.weights)
        baseline_loss = masked_mean((baseline - reward) ** 2, sel.weights)
        loss = policy_loss + baseline_loss + obj.disc_weight * disc_loss
        stats = {**gen_counts(proposal, sel), **rtd_counts(logits, labels, weights),
                 "n_scored": weights.sum(), "n_replaced": (labels * weights).sum()}
        return PretrainOutput(loss, proposal.mlm_loss.detach(), disc_loss.detach(), stats)


ALGORITHMS = {"joint": Algorithm, "two_stage": TwoStage, "adversarial": Adversarial}
