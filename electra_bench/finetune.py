"""One linear fine-tuning loop + evaluation, for any task spec (classification, regression, tagging).

Protocol defaults come from the config schema (Paper Table 7): AdamW eps 1e-6, layer-wise lr decay, 10% warmup
then linear decay, batch 32, no weight decay. Batches are dynamically padded and grouped by length (GLUE/CoNLL
sentences are 10-30 word-pieces: padding to 128 wastes ~4x, stack-notes), which changes no result, only speed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import progress
from .metrics import METRICS, compute_metrics
from .model.heads import EncoderWithHead, count_params, n_layers
from .optim import layerwise_lrs, linear_schedule, make_optimizer
from .robustness import RobustSettings, context, perturbed_sets, summary
from .tasks import TaskSpec, both_orders, load_split


@dataclass(frozen=True)
class FinetuneSettings:
    lr: float
    layerwise_decay: float
    official_layer_decay: bool
    warmup_fraction: float
    weight_decay: float
    adam_eps: float
    batch_size: int
    epochs: float
    max_seq_length: int
    train_examples: int | None
    dev_examples: int | None
    head: str
    double_unordered: bool
    precision: str
    device: str
    seed: int
    predictions_dir: Path | None = None  # when set: test-split predictions in submission format go here
    robustness: RobustSettings | None = None  # when set: also score perturbed dev sets (robustness.py)


@dataclass
class Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list  # int / float per example, or per-token lists (-100 = not scored) for tagging
    word_starts: list[list[int]] = field(default_factory=list)  # tagging: token index of each word's first piece
    n_words: list[int] = field(default_factory=list)


def subsample(ds, n: int | None, seed: int):
    return ds if n is None or n >= len(ds) else ds.shuffle(seed=seed).select(range(n))


def encode(spec: TaskSpec, ds, tokenizer, max_len: int) -> Encoded:
    if spec.kind == "tagging":
        enc = tokenizer(list(ds["tokens"]), is_split_into_words=True, truncation=True, max_length=max_len)
        labels, starts, n_words = [], [], []
        for i, tags in enumerate(list(ds["tags"])):
            word_ids, prev, lab, st = enc.word_ids(i), None, [], []
            for t, w in enumerate(word_ids):
                first = w is not None and w != prev
                lab.append(tags[w] if first else -100)
                if first:
                    st.append(t)
                prev = w
            labels.append(lab)
            starts.append(st)
            n_words.append(len(tags))
        types = [[0] * len(x) for x in enc["input_ids"]]
        return Encoded(enc["input_ids"], types, labels, starts, n_words)
    texts = [list(ds["text_a"])] + ([list(ds["text_b"])] if "text_b" in ds.column_names else [])
    enc = tokenizer(*texts, truncation=True, max_length=max_len)
    return Encoded(enc["input_ids"], enc["token_type_ids"], list(ds["label"]))


def length_grouped_batches(lengths: list[int], batch_size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Shuffled mega-batches of 50 batches, each sorted by length, cut into batches; batches shuffled."""
    idx = rng.permutation(len(lengths)) if rng is not None else np.argsort(lengths, kind="stable")
    mega = batch_size * 50
    batches = []
    for start in range(0, len(idx), mega):
        chunk = idx[start:start + mega]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    if rng is not None:
        rng.shuffle(batches)
    return batches


def collate(data: Encoded, rows: np.ndarray, tagging: bool, regression: bool, device: str):
    width = max(len(data.input_ids[i]) for i in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    types = torch.zeros_like(ids)
    labels = torch.full((len(rows), width), -100, dtype=torch.long) if tagging else None
    for j, i in enumerate(rows):
        n = len(data.input_ids[i])
        ids[j, :n] = torch.tensor(data.input_ids[i])
        types[j, :n] = torch.tensor(data.token_type_ids[i])
        if tagging:
            labels[j, :n] = torch.tensor(data.labels[i])
    if not tagging:
        labels = torch.tensor([data.labels[i] for i in rows], dtype=torch.float if regression else torch.long)
    return ids.to(device), (ids != 0).long().to(device), types.to(device), labels.to(device)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels)
    return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten(), ignore_index=-100)


@torch.no_grad()
def predict(model, data: Encoded, spec: TaskSpec, s: FinetuneSettings) -> list:
    model.eval()
    tagging, regression = spec.kind == "tagging", spec.kind == "regression"
    lengths = [len(x) for x in data.input_ids]
    preds: list = [None] * len(lengths)
    for rows in length_grouped_batches(lengths, s.batch_size * 2, None):
        ids, mask, types, _ = collate(data, rows, tagging, regression, s.device)
        with torch.autocast(s.device, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
            logits = model(ids, mask, types).float()
        for j, i in enumerate(rows):
            if tagging:  # first piece of each word; words cut off by truncation are predicted "O" (id of "O")
                word_preds = logits[j].argmax(-1)[data.word_starts[i]].tolist()
                o_id = spec.labels.index("O") if "O" in spec.labels else 0
                preds[i] = word_preds + [o_id] * (data.n_words[i] - len(word_preds))
            else:
                preds[i] = float(logits[j, 0]) if regression else int(logits[j].argmax())
    model.train()
    return preds


def degenerate(spec: TaskSpec, preds: list) -> bool:
    """A fine-tune that predicts one class (or a constant) for every example: flagged, never silently averaged."""
    if spec.kind == "regression":
        return float(np.std(preds)) < 1e-6
    flat = [p for seq in preds for p in seq] if spec.kind == "tagging" else preds
    return len(set(flat)) <= 1


def write_predictions(spec: TaskSpec, ds, preds: list, path: Path) -> Path:
    """GLUE leaderboard format (`index<TAB>prediction`, label names, STS-B scores clipped to [0, 5]) or, for
    tagging, CoNLL columns (`token gold predicted`, blank line between sentences; gold is `O` when withheld)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.kind == "tagging":
        lines = []
        for tokens, gold, pred in zip(ds["tokens"], ds["tags"], preds):
            lines += [f"{t} {spec.labels[g] if g >= 0 else 'O'} {spec.labels[p]}"
                      for t, g, p in zip(tokens, gold, pred)]
            lines.append("")
    else:
        lines = ["index\tprediction"]
        for i, p in enumerate(preds):
            lines.append(f"{i}\t{min(5.0, max(0.0, p)):.3f}" if spec.kind == "regression" else f"{i}\t{spec.labels[p]}")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)
    return path


def gold_of(spec: TaskSpec, ds) -> list:
    return list(ds["tags"]) if spec.kind == "tagging" else list(ds["label"])


def score(spec: TaskSpec, preds: list, gold: list) -> dict[str, float]:
    raw = compute_metrics(spec, preds, gold)
    return {k: v * METRICS.get(k).scale for k, v in raw.items()}


def robust_eval(model, spec: TaskSpec, dev_ds, dev: Encoded, tokenizer, s: FinetuneSettings, data_root: Path,
                clean: float) -> dict[str, float]:
    """The trained model on every perturbed dev set of `s.robustness`: robustness.summary's record metrics."""
    ctx = context(spec, tokenizer, s.robustness, data_root, s.device)
    sets = perturbed_sets(spec, dev_ds, dev, ctx, s.robustness,
                          lambda ds: encode(spec, ds, tokenizer, s.max_seq_length))
    scores = {(kind, rate): score(spec, predict(model, data, spec, s), gold_of(spec, ds))[spec.headline]
              for kind, rate, data, ds in sets}
    return summary(scores, clean, spec.headline, METRICS.get(spec.headline).higher_is_better)


def finetune(spec: TaskSpec, model: EncoderWithHead, tokenizer, s: FinetuneSettings, data_root: Path,
             log=lambda metrics, step: None, show_progress: bool = True) -> dict:
    """Fine-tune `model` on `spec`'s train split and score the dev split; returns metrics (reporting scale)."""
    torch.manual_seed(s.seed)
    if s.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    rng = np.random.default_rng(s.seed)
    train_ds = subsample(load_split(spec, "train", data_root), s.train_examples, s.seed)
    if spec.symmetric and s.double_unordered:
        train_ds = both_orders(train_ds)
    dev_split, *other_dev = spec.dev_splits  # the first is the headline (MNLI: matched)
    dev_ds = subsample(load_split(spec, dev_split, data_root), s.dev_examples, 0)
    train, dev = encode(spec, train_ds, tokenizer, s.max_seq_length), encode(spec, dev_ds, tokenizer, s.max_seq_length)
    dev_gold = gold_of(spec, dev_ds)
    model.to(s.device).train()
    steps_per_epoch = math.ceil(len(train.input_ids) / s.batch_size)
    total = max(1, round(steps_per_epoch * s.epochs))
    lrs = layerwise_lrs(model, s.lr, s.layerwise_decay, n_layers(model), s.official_layer_decay)
    optimizer = make_optimizer(model, s.lr, s.weight_decay, s.adam_eps, lr_of=lrs)
    scheduler = linear_schedule(optimizer, total, round(s.warmup_fraction * total))
    lengths = [len(x) for x in train.input_ids]
    tagging, regression = spec.kind == "tagging", spec.kind == "regression"
    step, t0, curve = 0, time.perf_counter(), []
    with progress.bar(total, f"finetune {spec.name}", show_progress) as bar:
        while step < total:
            for rows in length_grouped_batches(lengths, s.batch_size, rng):
                ids, mask, types, labels = collate(train, rows, tagging, regression, s.device)
                with torch.autocast(s.device, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
                    loss = loss_fn(model(ids, mask, types), labels, spec.kind)
                if not math.isfinite(float(loss)):
                    raise FloatingPointError(f"fine-tuning loss is {float(loss)} at step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.update(1, f"loss {float(loss):.3f}")
                if step % 20 == 0:
                    log({"train/loss": float(loss)}, step)
                if step % steps_per_epoch == 0 or step == total:
                    metrics = score(spec, predict(model, dev, spec, s), dev_gold)
                    log({f"dev/{k}": v for k, v in metrics.items()}, step)
                    curve.append({"step": step, **metrics})
                if step >= total:
                    break
    preds = predict(model, dev, spec, s)
    metrics = score(spec, preds, dev_gold)
    for split in other_dev:  # e.g. MNLI mismatched: reported as <metric>@<split>
        ds = subsample(load_split(spec, split, data_root), s.dev_examples, 0)
        extra = score(spec, predict(model, encode(spec, ds, tokenizer, s.max_seq_length), spec, s), gold_of(spec, ds))
        metrics.update({f"{k}@{split}": v for k, v in extra.items()})
    if s.predictions_dir is not None and "test" in spec.files:
        test_ds = load_split(spec, "test", data_root)
        test_preds = predict(model, encode(spec, test_ds, tokenizer, s.max_seq_length), spec, s)
        write_predictions(spec, test_ds, test_preds, s.predictions_dir / f"{spec.name}-seed{s.seed}.tsv")
    if s.robustness is not None:  # the same model on corrupted input (issue #9)
        metrics.update(robust_eval(model, spec, dev_ds, dev, tokenizer, s, data_root, metrics[spec.headline]))
    flags = ["degenerate"] if degenerate(spec, preds) else []
    return {"metrics": metrics, "headline": metrics[spec.headline], "flags": flags, "curve": curve,
            "n_train": len(train.input_ids), "n_dev": len(dev.input_ids), "steps": total,
            "params": count_params(model), "wall_s": time.perf_counter() - t0}
