"""Optimiser, schedule and layer-wise learning rates, with the official code's quirks as options.

- AdamW, eps 1e-6, betas 0.9/0.999 (T6/T7); weight decay excludes LayerNorm weights and all biases
  (GR model/optimization.py `_do_use_weight_decay`).
- `bias_correction=False` is the official AdamWeightDecayOptimizer, which has no Adam bias correction
  (electra-reference §7.1, §8.2): early updates are LARGER than bias-corrected Adam's, by
  (1 - beta1^t) / (1 - beta2^t)^0.5 (~3.2x at step 1, ~6.5x at step 10 with betas 0.9/0.999, back to ~1x only
  after a few thousand steps); warmup is what keeps them small.
- Schedule: linear warmup then linear decay to 0. The official code multiplies both (warmup and decay run at the
  same time); `linear_schedule(..., official=True)` does that. It is not a config option: pre-training and
  fine-tuning both use the default, the usual warmup-then-decay.
- Layer-wise LR decay (T7: 0.8): lr * decay^(n_layers + 1 - depth), embeddings depth 0, layer i depth i+1, head
  full lr. The official code uses n_layers + 2 (GR#51: the top layer gets lr * decay^2, a leftover of a removed
  pooler): `official_layer_decay=True` reproduces that.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn


def param_groups(model: nn.Module, weight_decay: float, lr: float,
                 lr_of: dict[str, float] | None = None) -> list[dict]:
    """Parameter groups: decay vs no decay, and per-parameter lr from `lr_of` (name -> lr) when given."""
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():  # named_parameters() visits a shared tensor once
        if not p.requires_grad:
            continue
        no_decay = p.ndim < 2 or "LayerNorm" in name or "layer_norm" in name or name.endswith(".bias")
        key = (0.0 if no_decay else weight_decay, (lr_of or {}).get(name, lr))
        groups.setdefault(key, []).append(p)
    return [{"params": ps, "weight_decay": wd, "lr": g_lr, "initial_lr": g_lr} for (wd, g_lr), ps in groups.items()]


class AdamWNoBiasCorrection(torch.optim.Optimizer):
    """BERT/ELECTRA's AdamWeightDecayOptimizer: Adam moments without bias correction, decoupled decay."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["m"], state["v"] = torch.zeros_like(p), torch.zeros_like(p)
                m, v = state["m"], state["v"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"]:
                    update = update + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])


def make_optimizer(model: nn.Module, lr: float, weight_decay: float, eps: float, betas=(0.9, 0.999),
                   bias_correction: bool = True, lr_of: dict[str, float] | None = None,
                   fused: bool = False) -> torch.optim.Optimizer:
    """`fused`: torch's fused AdamW kernel (CPU and CUDA); there is none without bias correction."""
    groups = param_groups(model, weight_decay, lr, lr_of)
    if bias_correction:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused or None)
    if fused:
        raise ValueError("torch's fused AdamW always corrects bias: the no-bias-correction variant runs unfused")
    return AdamWNoBiasCorrection(groups, lr=lr, betas=betas, eps=eps)


def linear_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    official: bool = False) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        decay = max(0.0, 1.0 - step / max(1, total_steps))
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        if official:  # GR: polynomial decay times warmup, both from step 0
            return decay * warm
        if step < warmup_steps:
            return warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")


def layerwise_lrs(model: nn.Module, lr: float, decay: float, n_layers: int, official: bool = False) -> dict[str, float]:
    """Per-parameter lr for fine-tuning with layer-wise decay (T7: 0.8 Small/Base, 0.9 Large)."""
    top = n_layers + (2 if official else 1)
    out = {}
    for name, _ in model.named_parameters():
        match = _LAYER.search(name)
        if match:
            depth = int(match.group(1)) + 1
        elif "embeddings" in name:  # embeddings and their projection
            depth = 0
        else:  # task head
            depth = top
        out[name] = lr * math.pow(decay, top - depth)
    return out
