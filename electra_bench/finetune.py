"""One linear fine-tuning loop + evaluation, for any task spec (classification, regression, tagging).

Protocol defaults come from the config schema (Paper Table 7): AdamW eps 1e-6, layer-wise lr decay, 10% warmup
then linear decay, batch 32, no weight decay. Batches are dynamically padded and grouped by length (GLUE/CoNLL
sentences are 10-30 word-pieces: padding to 128 wastes ~4x, stack-notes), which changes no result, only speed.
"""
from __future__ import annotations

import copy
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
import torch.nn.functional as F

from . import progress
from .metrics import METRICS, compute_metrics
from .model.heads import EncoderWithHead, count_params, n_layers, to_hf
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
    keep_best: bool = False  # keep (on the CPU) the weights of the best per-epoch dev headline: result "best"


@dataclass
class Encoded:
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    labels: list  # int / float per example, or per-token lists (-100 = not scored) for tagging
    # tagging: per word (in word order), the token index of its first piece, or -1 for a word with no piece (one
    # that tokenizes to nothing, e.g. a lone U+FE0F, or that truncation cut off); read by word id, never by counting
    word_starts: list[list[int]] = field(default_factory=list)
    n_words: list[int] = field(default_factory=list)


def subsample(ds, n: int | None, seed: int):
    return ds if n is None or n >= len(ds) else ds.shuffle(seed=seed).select(range(n))


def encode(spec: TaskSpec, ds, tokenizer, max_len: int) -> Encoded:
    if spec.kind == "tagging":
        enc = tokenizer(list(ds["tokens"]), is_split_into_words=True, truncation=True, max_length=max_len)
        labels, starts, n_words = [], [], []
        for i, tags in enumerate(list(ds["tags"])):
            first = word_first_pieces(enc.word_ids(i), len(tags))
            lab = [-100] * len(enc["input_ids"][i])
            for w, t in enumerate(first):
                if t >= 0:
                    lab[t] = tags[w]
            labels.append(lab)
            starts.append(first)
            n_words.append(len(tags))
        types = [[0] * len(x) for x in enc["input_ids"]]
        return Encoded(enc["input_ids"], types, labels, starts, n_words)
    texts = [list(ds["text_a"])] + ([list(ds["text_b"])] if "text_b" in ds.column_names else [])
    enc = tokenizer(*texts, truncation=True, max_length=max_len)
    return Encoded(enc["input_ids"], enc["token_type_ids"], list(ds["label"]))


def word_first_pieces(word_ids: list[int | None], n_words: int) -> list[int]:
    """Per word, the token index of its first piece (-1: none), from the tokenizer's word ids. Counting first
    pieces in order instead shifts every later word of a sentence after one that yields no piece (issue 18)."""
    first = [-1] * n_words
    for t, w in enumerate(word_ids):
        if w is not None and first[w] < 0:
            first[w] = t
    return first


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
def predict(model, data: Encoded, spec: TaskSpec, s: FinetuneSettings, scores: list | None = None) -> list:
    """Predictions per example (class id, score, or one tag id per word). `scores`, when given, is filled with the
    model's confidence per example: class probabilities; for tagging, the probability of each word's predicted tag
    (None for a word with no piece); None for regression (the prediction is the score)."""
    model.eval()
    tagging, regression = spec.kind == "tagging", spec.kind == "regression"
    lengths = [len(x) for x in data.input_ids]
    preds: list = [None] * len(lengths)
    if scores is not None:
        scores[:] = [None] * len(lengths)
    for rows in length_grouped_batches(lengths, s.batch_size * 2, None):
        ids, mask, types, _ = collate(data, rows, tagging, regression, s.device)
        with torch.autocast(s.device, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
            logits = model(ids, mask, types).float()
        for j, i in enumerate(rows):
            if tagging:  # each word by its first piece; a word with none (empty or truncated) is predicted "O"
                best = logits[j].argmax(-1).tolist()
                o_id = spec.labels.index("O") if "O" in spec.labels else 0
                preds[i] = [best[t] if t >= 0 else o_id for t in data.word_starts[i]]
                if scores is not None:
                    top = logits[j].softmax(-1).max(-1).values.tolist()
                    scores[i] = [round(top[t], 4) if t >= 0 else None for t in data.word_starts[i]]
            else:
                preds[i] = float(logits[j, 0]) if regression else int(logits[j].argmax())
                if scores is not None and not regression:
                    scores[i] = [round(p, 4) for p in logits[j].softmax(-1).tolist()]
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
    dev_full = load_split(spec, dev_split, data_root)
    dev_ds = subsample(dev_full, s.dev_examples, 0)
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
    step, t0, curve, best = 0, time.perf_counter(), [], None
    higher = METRICS.get(spec.headline).higher_is_better
    with progress.bar(total, f"finetune {spec.name}", show_progress) as bar:
        while step < total:
            for rows in length_grouped_batches(lengths, s.batch_size, rng):
                ids, mask, types, labels = collate(train, rows, tagging, regression, s.device)
                with torch.autocast(s.device, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
                    loss = loss_fn(model(ids, mask, types), labels, spec.kind)
                value = float(loss.detach())  # the step's one host read (detached: no requires_grad warning)
                if not math.isfinite(value):
                    raise FloatingPointError(f"fine-tuning loss is {value} at step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                bar.update(1, f"loss {value:.3f}")
                if step % 20 == 0:
                    log({"train/loss": value}, step)
                if step % steps_per_epoch == 0 or step == total:
                    metrics = score(spec, predict(model, dev, spec, s), dev_gold)
                    log({f"dev/{k}": v for k, v in metrics.items()}, step)
                    curve.append({"step": step, **metrics})
                    if s.keep_best and improves(metrics[spec.headline], best, higher):
                        best = {"step": step, "headline": metrics[spec.headline],
                                "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
                if step >= total:
                    break
    dev_scores: list = []
    preds = predict(model, dev, spec, s, dev_scores)
    metrics = score(spec, preds, dev_gold)
    dev_ids = subsample(datasets.Dataset.from_dict({"i": list(range(len(dev_full)))}), s.dev_examples, 0)["i"]
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
            "params": count_params(model), "wall_s": time.perf_counter() - t0, "best": best,
            "dev_predictions": dev_prediction_rows(spec, dev_ids, preds, dev_gold, dev_scores)}


def improves(value: float, best: dict | None, higher_is_better: bool) -> bool:
    """Whether a dev headline beats the kept best (the first evaluation always does; NaN never beats, a NaN best
    is beaten by any number). Ties keep the earlier epoch."""
    if best is None or math.isnan(best["headline"]):
        return best is None or not math.isnan(value)
    return value > best["headline"] if higher_is_better else value < best["headline"]


def save_hf_model(model: EncoderWithHead, tokenizer, spec: TaskSpec, max_seq_length: int, folder: Path,
                  state: dict | None = None) -> Path:
    """`model` (or its weights `state`) as a standard HF folder: `AutoModelForSequenceClassification` /
    `AutoModelForTokenClassification` (model.heads.to_hf; id2label = the task's label names) and the fast tokenizer
    (`model_max_length` = the fine-tune's max sequence length), so `transformers.pipeline(task, model=folder)` runs
    it. Written to a temporary folder and renamed, so a kill leaves the old folder or none, never half of one."""
    hf = to_hf(model, None if spec.kind == "regression" else list(spec.labels), state)
    tok = copy.deepcopy(tokenizer)  # the fine-tune's own tokenizer keeps its settings
    tok.model_max_length = max_seq_length
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)  # a re-run of the same unit replaces its model
    tmp.rename(folder)
    return folder


def dev_prediction_rows(spec: TaskSpec, ids: list[int], preds: list, gold: list, scores: list) -> list[dict]:
    """One row per dev example, the format of `predictions/<run_key>.jsonl` (results.PREDICTIONS_FORMAT): `id` (row
    of the dev split, 0-based, in file order), `gold` and `pred` (label names; tag-name lists; floats), and `probs`
    (class probabilities in label order) or, for tagging, `score` (probability of each word's predicted tag)."""
    def name(v):
        return float(v) if spec.kind == "regression" else spec.labels[v]

    rows = []
    for i, g, p, sc in zip(ids, gold, preds, scores):
        if spec.kind == "tagging":
            row = {"id": i, "gold": [name(t) for t in g], "pred": [name(t) for t in p], "score": sc}
        else:
            row = {"id": i, "gold": name(g), "pred": name(p)} | ({} if sc is None else {"probs": sc})
        rows.append(row)
    return rows
