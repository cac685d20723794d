"""The robustness protocol of a suite's `robustness:` section (issue #9): which generator, which key, which metrics.

After a fine-tune has been scored on its clean dev set, the same model is scored on each perturbed dev set
(perturb.py: every kind that applies to the task, at every rate). The fine-tune record then carries, beside the
clean metrics (drops are direction-aware: positive means worse):

  robust/<kind>/<rate>/<headline>   the headline metric on the perturbed set
  robust_drop/<kind>/<rate>         clean - perturbed, in metric points
  robust_rel_drop/<kind>/<rate>     that drop in % of the clean value
  robust_rel_drop/<kind>            its mean over the rates: the "degrades less" measure
  robust_rel_drop/all               its mean over the kinds that apply to the task
  robust_auc/<kind>                 area under metric-vs-rate from rate 0 (clean) to the largest rate, divided by
                                    that rate: the mean metric over the range, on the metric's scale

They aggregate over seeds like any metric (results.metric_view) and are claim metrics (`task:` + `metric:`); their
directions are metric families registered in metrics.py. Keys: a fine-tune's run key sees the section only when the
suite has one (suite.robustness_identity), so every other suite's keys stay as they were; it sees the generator by
its pre-training key. Pre-training keys never see it. The loader checks the section (`check_robustness`) and keeps
the generator cell on the suite; the runner turns it into RobustSettings (runner.robust_settings).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from . import perturb
from .registry import did_you_mean
from .schema import RobustnessConfig
from .tasks import load_split

PERTURB_VERSION = "1"  # bump when a perturbation changes what it produces (re-runs robustness fine-tunes only)
GENERATOR_CHECKPOINT = 1.0  # the generator at the end of pre-training


@dataclass(frozen=True)
class RobustSettings:
    """Plain settings of the robustness evaluation of one fine-tune (FinetuneSettings.robustness)."""

    kinds: tuple[str, ...]
    rates: tuple[float, ...]
    seed: int
    generator_dir: Path | None = None  # a save_pretrained ElectraForMaskedLM (+ tokenizer)
    generator_cell: str | None = None  # its cell's label, for messages


class RobustnessError(ValueError):
    """A `robustness:` section that does not fit the suite; `field` is the key to blame (config.py: file:line)."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def applicable(kinds, task_kind: str) -> list[str]:
    return [k for k in kinds if task_kind in perturb.PERTURBATIONS.get(k).task_kinds]


def generator_cell(cells: Sequence, cfg: RobustnessConfig):
    """The cell whose generator the `generator` kind samples from (None when that kind is not asked for): the one
    named by `generator_cell`, else the first cell pre-training ELECTRA with a masked-LM generator. `cells`: the
    loader's config.Cell objects (a label and a RunConfig each); the result is one of them."""
    if "generator" not in cfg.kinds:
        return None
    if cfg.generator_cell is None:
        found = next((c for c in cells if c.config.has_generator and c.config.pretrain.objective == "electra"), None)
        if found is None:
            raise RobustnessError("kind 'generator' needs a cell that pre-trains ELECTRA with a masked-LM generator; "
                                  "none does (name one in generator_cell, or drop 'generator')", "kinds")
        return found
    labels = [c.label for c in cells]
    if cfg.generator_cell not in labels:
        raise RobustnessError(f"generator_cell '{cfg.generator_cell}' is not a cell of the suite"
                              f"{did_you_mean(cfg.generator_cell, labels)}; cells: {', '.join(labels)}",
                              "generator_cell")
    cell = cells[labels.index(cfg.generator_cell)]
    if not cell.config.has_generator:
        pre = cell.config.pretrain
        raise RobustnessError(f"cell '{cell.label}' trains no masked-LM generator (objective {pre.objective}, "
                              f"generator_size {pre.generator_size}, finetune.init {cell.config.finetune.init})",
                              "generator_cell")
    return cell


def check_robustness(cfg: RobustnessConfig, cells: Sequence, task_kinds: Mapping[str, str]):
    """Load-time checks beyond the schema (config.py calls it): the generator cell exists and trains a generator,
    every kind applies to some task. Returns the generator cell (None without the `generator` kind)."""
    cell = generator_cell(cells, cfg)
    for kind in cfg.kinds:
        if not any(applicable([kind], k) for k in task_kinds.values()):
            wanted = ", ".join(perturb.PERTURBATIONS.get(kind).task_kinds)
            raise RobustnessError(f"kind '{kind}' applies to {wanted} tasks; the suite has none "
                                  f"({', '.join(task_kinds) or 'no tasks'})", "kinds")
    return cell


def context(spec, tokenizer, settings: RobustSettings, data_root: Path, device: str) -> perturb.Context:
    """What the task's perturbations read: the tokenizer's specials, the train mentions, the generator."""
    kinds = applicable(settings.kinds, spec.kind)
    special = tuple(sorted(set(tokenizer.all_special_ids)))
    mentions = {}
    if "entity_swap" in kinds:
        mentions = perturb.train_mentions(load_split(spec, "train", data_root).to_list(), spec.labels)
    sampler = _load_generator(settings, tokenizer, special, device) if "generator" in kinds else None
    return perturb.Context(special, len(tokenizer), spec.labels, mentions, sampler)


def _load_generator(settings: RobustSettings, tokenizer, special: tuple[int, ...], device: str):
    from transformers import AutoTokenizer, ElectraForMaskedLM

    where = settings.generator_dir
    if where is None or not (where / "config.json").is_file():
        raise FileNotFoundError(f"no generator at {where}: the pre-training of cell '{settings.generator_cell}' has "
                                "not finished (fine-tunes of cells listed before it fail and are retried next run)")
    if AutoTokenizer.from_pretrained(where).get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"the generator at {where} has another vocabulary than the fine-tuned model: the "
                         "generator perturbation needs cells that share one vocabulary")
    model = ElectraForMaskedLM.from_pretrained(where).to(device).eval()
    return perturb.GeneratorSampler(model, tokenizer.mask_token_id, special, device)


def perturbed_sets(spec, dev_ds, dev, ctx: perturb.Context, settings: RobustSettings,
                   encode: Callable) -> Iterator[tuple[str, float, object, object]]:
    """(kind, rate, encoded set, its dataset) for every kind that applies to the task and every rate. Word kinds
    give new rows (re-encoded by `encode(dataset)`); piece kinds change the encoded ids in place."""
    import datasets

    rows = dev_ds.to_list()
    for kind in applicable(settings.kinds, spec.kind):
        p = perturb.PERTURBATIONS.get(kind)
        for rate in settings.rates:
            rng = perturb.rng_for(settings.seed, kind)
            if p.level == "words":
                ds = datasets.Dataset.from_list(p.fn(rows, rate, rng, ctx), features=dev_ds.features)
                yield kind, rate, encode(ds), ds
            else:
                ids = p.fn(dev.input_ids, dev.token_type_ids, rate, rng, ctx)
                yield kind, rate, replace(dev, input_ids=ids), dev_ds


def summary(scores: dict[tuple[str, float], float], clean: float, headline: str, higher: bool) -> dict[str, float]:
    """The record metrics of the module docstring from the perturbed scores {(kind, rate): value}."""
    import numpy as np  # deferred: numpy costs ~0.25 s to import; `validate` and `plan` compute nothing

    sign = 1.0 if higher else -1.0
    out: dict[str, float] = {}
    mean_rel = []
    for kind in dict.fromkeys(k for k, _ in scores):
        rates = sorted(r for k, r in scores if k == kind)
        values = [scores[(kind, r)] for r in rates]
        rel = []
        for rate, value in zip(rates, values):
            drop = sign * (clean - value)
            rel.append(100.0 * drop / abs(clean) if clean else math.nan)
            out |= {f"robust/{kind}/{rate:g}/{headline}": value, f"robust_drop/{kind}/{rate:g}": drop,
                    f"robust_rel_drop/{kind}/{rate:g}": rel[-1]}
        xs, ys = np.array([0.0, *rates]), np.array([clean, *values])
        out[f"robust_auc/{kind}"] = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2) / rates[-1])
        mean_rel.append(float(np.mean(rel)))
        out[f"robust_rel_drop/{kind}"] = mean_rel[-1]
    if mean_rel:
        out["robust_rel_drop/all"] = float(np.mean(mean_rel))
    return out
