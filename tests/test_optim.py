"""Optimiser, schedule and layer-wise learning rates, against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from electra_bench.optim import AdamWNoBiasCorrection, layerwise_lrs, linear_schedule, make_optimizer, param_groups


def test_no_bias_correction_first_step_is_smaller_than_adam():
    # Adam's first step is lr * sign(g); without bias correction it is lr * (1-b1) g / (sqrt((1-b2) g^2) + eps)
    p = nn.Parameter(torch.tensor([1.0]))
    p.grad = torch.tensor([0.5])
    opt = AdamWNoBiasCorrection([p], lr=0.1, betas=(0.9, 0.999), eps=1e-6)
    opt.step()
    expected = 1.0 - 0.1 * (0.1 * 0.5) / (math.sqrt(0.001 * 0.25) + 1e-6)
    assert p.item() == pytest.approx(expected, rel=1e-6)
    q = nn.Parameter(torch.tensor([1.0]))
    q.grad = torch.tensor([0.5])
    torch.optim.AdamW([q], lr=0.1, eps=1e-6, weight_decay=0).step()
    assert q.item() == pytest.approx(0.9, rel=1e-5)  # bias-corrected: a full lr step


def test_weight_decay_excludes_layernorm_and_bias():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    groups = param_groups(model, 0.01, 1e-3)
    decayed = [p for g in groups if g["weight_decay"] for p in g["params"]]
    assert len(decayed) == 1 and decayed[0] is model[0].weight
    opt = make_optimizer(model, 1e-3, 0.01, 1e-6, bias_correction=False)
    assert isinstance(opt, AdamWNoBiasCorrection)


@pytest.mark.parametrize("official", [False, True])
def test_linear_schedule(official):
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = linear_schedule(opt, total_steps=100, warmup_steps=10, official=official)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1 * (1.0 if not official else 1.0))
    assert max(lrs) == pytest.approx(1.0 if not official else 0.91, abs=0.01)
    assert lrs[-1] < 0.02


def test_layerwise_lrs_paper_and_official_off_by_one():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.electra = nn.Module()
            self.electra.embeddings = nn.Linear(1, 1)
            self.electra.encoder = nn.Module()
            self.electra.encoder.layer = nn.ModuleList([nn.Linear(1, 1) for _ in range(2)])
            self.classifier = nn.Linear(1, 1)

    m = M()
    lrs = layerwise_lrs(m, 1.0, 0.8, n_layers=2)
    assert lrs["classifier.weight"] == 1.0
    assert lrs["electra.encoder.layer.1.weight"] == pytest.approx(0.8)  # top layer: lr * decay (Table 7)
    assert lrs["electra.encoder.layer.0.weight"] == pytest.approx(0.64)
    assert lrs["electra.embeddings.weight"] == pytest.approx(0.8 ** 3)
    official = layerwise_lrs(m, 1.0, 0.8, n_layers=2, official=True)
    assert official["electra.encoder.layer.1.weight"] == pytest.approx(0.64)  # GR #51: lr * decay^2
