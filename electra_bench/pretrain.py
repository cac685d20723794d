"""One linear pre-training loop: build, loop (step, log, eval, checkpoint), return.

Resumable: the full training state (model, optimiser, scheduler, RNG, step; the data position follows from the
step and the seeded per-epoch permutation) is written atomically every `save_every` steps and at each checkpoint
fraction; a killed run continues from the last state and produces the same losses as an uninterrupted run.
Checkpoints at fractions of training (T1 rows: 6.25 ... 100%) are `save_pretrained` directories of the
discriminator (or MLM encoder), each usable by fine-tuning.
"""
from __future__ import annotations

import math
import os
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import progress
from .corpus import Blocks
from .model.algorithms import Algorithm
from .model.generators import MaskedLMGenerator
from .model.objectives import Batch, PretrainOutput
from .optim import linear_schedule, make_optimizer


@dataclass(frozen=True)
class PretrainSettings:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int
    weight_decay: float
    adam_eps: float
    betas: tuple[float, float]
    bias_correction: bool
    grad_clip: float
    eval_every: int
    eval_batches: int
    checkpoints: tuple[float, ...]
    seed: int
    precision: str  # fp32 | bf16
    device: str  # cpu | cuda
    log_every: int = 50
    save_every: int = 500
    # GPU options (schema.PretrainConfig explains each); the defaults are the loop as it was before them
    fused_adam: bool = False
    compile: str = "off"  # off | a torch.compile mode
    tf32: bool = True
    grad_accumulation: int = 1
    sdpa_backend: str = "auto"  # auto | flash | efficient | cudnn | math


class NonFiniteLoss(RuntimeError):
    """Raised when the loss becomes NaN or infinite: the unit fails with this reason, the suite goes on."""


def load_batch(blocks: Blocks, rows: np.ndarray, device: str) -> tuple[Batch, int]:
    """The batch of `rows` on `device`, and its count of non-pad tokens (counted on the host: no device read).

    On CUDA the host tensors are pinned and copied with `non_blocking`, so the copy overlaps the running step."""
    ids_np = blocks.input_ids[rows].astype(np.int64)
    n_tokens = int(np.count_nonzero(ids_np))  # [PAD] is id 0
    ids, types = torch.from_numpy(ids_np), torch.from_numpy(blocks.token_type_ids[rows].astype(np.int64))
    if device == "cuda":
        ids, types = ids.pin_memory(), types.pin_memory()
    ids, types = ids.to(device, non_blocking=True), types.to(device, non_blocking=True)
    return Batch(input_ids=ids, attention_mask=(ids != 0).long(), token_type_ids=types,
                 padded=n_tokens < ids_np.size), n_tokens


def to_batch(blocks: Blocks, rows: np.ndarray, device: str) -> Batch:
    return load_batch(blocks, rows, device)[0]


def batch_rows(n_blocks: int, batch_size: int, step: int, seed: int) -> np.ndarray:
    """Rows of the batch at `step`: a fresh seeded permutation per epoch, so the data position is the step."""
    per_epoch = n_blocks // batch_size
    if per_epoch == 0:
        raise ValueError(f"the corpus has {n_blocks} training blocks, fewer than one batch of {batch_size}")
    epoch, i = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    return perm[i * batch_size:(i + 1) * batch_size]


class RTDMeter:
    """Sums the objective's losses and counts on the device; `metrics()` reads them back once and turns them into
    the GR `metric_fn` metrics (electra-reference §7.1). `add` never reads a tensor, so a training step that calls
    it does not wait for the device (issue 15: one host sync per `log_every` steps, not per step)."""

    LOSSES = ("gen_loss", "disc_loss", "loss")

    def __init__(self):
        self.keys: tuple[str, ...] | None = None  # LOSSES, then the objective's count names in its order
        self.total: torch.Tensor | None = None  # [len(keys)] float64 running sums on the device
        self.n = 0  # steps (batches) added
        self.probs: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, out: PretrainOutput) -> None:
        keys = (*self.LOSSES, *out.stats)
        values = torch.stack([t.detach().float().reshape(()) for t in
                              (out.gen_loss, out.disc_loss, out.loss, *out.stats.values())]).double()
        if self.total is None:
            self.keys, self.total = keys, values
        else:
            if keys != self.keys:  # a two-stage run's discriminator joins mid-window: its counts start at zero
                self._widen(keys)
                values = self._aligned(keys, values)
            self.total = self.total + values
        self.n += 1
        if out.disc_probs is not None:
            self.probs.append(out.disc_probs.float())
            self.labels.append(out.disc_labels.float())

    def _widen(self, keys: tuple[str, ...]) -> None:
        """Add `keys` the window has not seen, summed as zero so far (counts are sums: a ratio of them covers the
        steps that had them); no host read."""
        new = tuple(k for k in keys if k not in self.keys)
        if new:
            self.keys = (*self.keys, *new)
            self.total = torch.cat([self.total, self.total.new_zeros(len(new))])

    def _aligned(self, keys: tuple[str, ...], values: torch.Tensor) -> torch.Tensor:
        """`values` (named by `keys`) in the window's key order, zero where a step lacks a key."""
        out = values.new_zeros(len(self.keys))
        return out.index_copy(0, torch.tensor([self.keys.index(k) for k in keys], device=values.device), values)

    def read(self) -> dict[str, float]:
        """The sums, in one device-to-host transfer ({} when nothing was added)."""
        return dict(zip(self.keys, self.total.tolist())) if self.total is not None else {}

    def metrics(self, sums: dict[str, float] | None = None) -> dict[str, float]:
        s = self.read() if sums is None else sums
        out = {k: s[k] / self.n for k in self.LOSSES if k in s}
        if s.get("n_selected"):
            if "gen_correct" in s:
                out["gen_mlm_acc"] = s["gen_correct"] / s["n_selected"]
            if "sampled_correct" in s:
                out["sampled_acc"] = s["sampled_correct"] / s["n_selected"]
        if "disc_tp" in s:
            tp, fp, fn, tn = s["disc_tp"], s["disc_fp"], s["disc_fn"], s["disc_tn"]
            out["disc_acc"] = (tp + tn) / max(tp + fp + fn + tn, 1)
            out["disc_precision"] = tp / (tp + fp) if tp + fp else 0.0
            out["disc_recall"] = tp / (tp + fn) if tp + fn else 0.0
        if s.get("n_scored"):
            out["replaced_frac"] = s["n_replaced"] / s["n_scored"]
        if self.probs:
            labels, probs = torch.cat(self.labels).cpu().numpy(), torch.cat(self.probs).cpu().numpy()
            if 0 < labels.sum() < len(labels):
                from sklearn.metrics import roc_auc_score

                out["disc_auc"] = float(roc_auc_score(labels, probs))
        return out


@torch.no_grad()
def evaluate(algorithm: Algorithm, heldout: Blocks, s: PretrainSettings, train: Blocks | None = None
             ) -> dict[str, float]:
    """RTD metrics on held-out blocks with a fixed RNG (same masks every eval), dropout off, and the generator
    sampling at temperature 1 whatever the training temperature: the paper's fakes. Scored at T=2 the fakes
    over-sample rare tokens and a context-free lookup of P(replaced | token id) nearly matches the discriminator
    (issue 14 audit), so a training-temperature score measures the shortcut, not the discriminator.

    Beside them: `token_cosine`, the mean cosine between the top-layer states of the tokens of a held-out
    sequence (uncorrupted input; near 1 = the representations collapsed toward one vector), and, for objectives
    with a discriminator and when `train` is given, `lookup_auc`: the AUC of the context-free lookup
    P(replaced | token id) estimated on T=1 fakes of LOOKUP_TRAIN_BATCHES x eval_batches training batches and
    scored on the held-out fakes, the shortcut baseline to set beside `disc_auc`."""
    objective = algorithm.objective
    was_training = objective.training
    objective.eval()
    sampling = [m for m in objective.modules() if isinstance(m, MaskedLMGenerator)]
    temperatures = [m.temperature for m in sampling]
    for m in sampling:
        m.temperature = 1.0
    try:
        meter, tokens, cosines = RTDMeter(), [], []
        rng = torch.Generator(device=s.device).manual_seed(1234)  # the same masks and fakes every eval
        for batch in _eval_batches(heldout, s.eval_batches, s):
            with torch.autocast(s.device, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
                out = objective(batch, rng=rng, keep_scores=True)
                hidden = _top_states(objective.encoder(), batch)
            meter.add(out)
            if out.disc_tokens is not None:
                tokens.append(out.disc_tokens)
            cosines.append(mean_token_cosine(hidden, batch.attention_mask))
        metrics = meter.metrics()
        metrics["token_cosine"] = float(torch.cat(cosines).mean())
        if tokens and train is not None and "disc_auc" in metrics:
            fit_tokens, fit_labels = [], []
            rng = torch.Generator(device=s.device).manual_seed(4321)
            for batch in _eval_batches(train, LOOKUP_TRAIN_BATCHES * s.eval_batches, s):
                with torch.autocast(s.device, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
                    out = objective(batch, rng=rng, keep_scores=True)
                fit_tokens.append(out.disc_tokens)
                fit_labels.append(out.disc_labels)
            auc = lookup_auc(torch.cat(fit_tokens), torch.cat(fit_labels), torch.cat(tokens), torch.cat(meter.labels))
            if auc is not None:
                metrics["lookup_auc"] = auc
    finally:
        objective.train(was_training)
        for m, t in zip(sampling, temperatures):
            m.temperature = t
    return metrics


LOOKUP_TRAIN_BATCHES = 4  # training batches per held-out batch that estimate P(replaced | token id)


def _eval_batches(blocks: Blocks, n_batches: int, s: PretrainSettings):
    n = min(len(blocks), n_batches * s.batch_size)
    for start in range(0, n, s.batch_size):
        yield to_batch(blocks, np.arange(start, min(start + s.batch_size, n)), s.device)


def _top_states(encoder: torch.nn.Module, batch: Batch) -> torch.Tensor:
    body = getattr(encoder, "electra", encoder)  # ElectraForPreTraining / ForMaskedLM -> their ElectraModel
    return body(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                token_type_ids=batch.token_type_ids).last_hidden_state


def mean_token_cosine(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] mean cosine over the pairs of distinct non-pad tokens of each sequence: (|sum of unit vectors|^2 - n)
    / (n (n - 1)), no [L, L] matrix. 1 = every token state points the same way (representation collapse)."""
    unit = torch.nn.functional.normalize(hidden.float(), dim=-1) * mask[..., None].float()  # [B, L, H]
    n = mask.float().sum(-1)  # [B]
    total = unit.sum(1).pow(2).sum(-1)  # [B] |sum_i u_i|^2 = n + sum_{i != j} cos(i, j)
    return (total - n) / (n * (n - 1)).clamp(min=1.0)


def lookup_auc(fit_tokens: torch.Tensor, fit_labels: torch.Tensor, tokens: torch.Tensor,
               labels: torch.Tensor, prior_weight: float = 1.0) -> float | None:
    """AUC of the context-free detector P(replaced | token id), counted on (fit_tokens, fit_labels) with
    `prior_weight` pseudo-counts of the overall replaced rate (unseen ids score that rate), scored on (tokens,
    labels). None when the labels have one class."""
    fit_tokens, tokens = fit_tokens.long().cpu(), tokens.long().cpu()
    fit_labels, labels = fit_labels.double().cpu(), labels.double().cpu()
    size = int(max(fit_tokens.max(), tokens.max())) + 1
    seen = torch.bincount(fit_tokens, minlength=size).double()
    replaced = torch.bincount(fit_tokens, weights=fit_labels, minlength=size)
    prior = float(fit_labels.mean()) if len(fit_labels) else 0.0
    scores = ((replaced + prior_weight * prior) / (seen + prior_weight))[tokens]
    y = labels.numpy()
    if not 0 < y.sum() < len(y):
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores.numpy()))


SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                 "math": "MATH"}  # schema names -> torch.nn.attention.SDPBackend members


@contextmanager
def cuda_settings(s: PretrainSettings):
    """TF32 and the SDPA kernel for this run only: restored after, so other runs in the process set their own."""
    if s.device != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = s.tf32
    try:
        with ExitStack() as stack:
            if s.sdpa_backend != "auto":
                from torch.nn.attention import SDPBackend, sdpa_kernel

                stack.enter_context(sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[s.sdpa_backend])))
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _save_state(path: Path, algorithm: Algorithm, optimizer, scheduler, step: int, rng: torch.Generator,
                evals: list[dict] | None, wall_s: float | None) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": algorithm.objective.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step, "rng": rng.get_state(), "evals": evals,
                "wall_s": wall_s,  # seconds of training loop up to `step`, over every process (None: unknown)
                "torch_rng": torch.get_rng_state(),  # dropout draws from the global generator
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "algorithm": algorithm.state_dict()}, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous state intact


def checkpoint_dir(out_dir: Path, fraction: float) -> Path:
    return out_dir / f"checkpoint-{fraction * 100:g}pct"


GENERATOR_DIR = "generator"  # <checkpoint>/generator: the masked-LM generator at that checkpoint, when there is one


def save_checkpoint(objective, tokenizer, folder: Path) -> None:
    """A `save_pretrained` folder of the network fine-tuning starts from, its tokenizer and its generator.

    What a user loading it without the harness meets first: the tokenizer's `model_max_length` is the position
    table's size (not transformers' 1e30 placeholder, which lets a pipeline crash on long input), and an ELECTRA
    discriminator names its two classes original / replaced (not LABEL_0 / LABEL_1). Neither changes training."""
    encoder = objective.encoder()
    if hasattr(objective, "discriminator"):
        encoder.config.id2label, encoder.config.label2id = {0: "original", 1: "replaced"}, {"original": 0,
                                                                                             "replaced": 1}
    encoder.save_pretrained(folder)
    limit, tokenizer.model_max_length = tokenizer.model_max_length, encoder.config.max_position_embeddings
    try:
        tokenizer.save_pretrained(folder)
        save_generator(objective, tokenizer, folder)
    finally:
        tokenizer.model_max_length = limit


def save_generator(objective, tokenizer, checkpoint: Path) -> None:
    """Save the masked-LM generator beside the discriminator (robustness.py samples substitutions from it). Only
    written, never read back by training: results and run keys do not change. No-op for MLM / unigram."""
    model = getattr(getattr(objective, "generator", None), "model", None)  # MaskedLMGenerator.model
    if model is not None:
        model.save_pretrained(checkpoint / GENERATOR_DIR)
        tokenizer.save_pretrained(checkpoint / GENERATOR_DIR)


def pretrain(algorithm: Algorithm, train: Blocks, heldout: Blocks, s: PretrainSettings, out_dir: Path,
             tokenizer, log=lambda metrics, step: None, show_progress: bool = True,
             history: list | None = None, clock: dict | None = None) -> dict[str, float]:
    """Train to `s.steps`, resuming from `out_dir/state.pt` if present; return the final held-out metrics.

    `history`, if given, receives every held-out evaluation of the run, {"step", **metrics}, the ones before a
    resume included (they are part of the saved state); it stays empty when the run resumed from a state saved
    before states kept them, rather than holding only the evaluations after the resume. `clock`, if given,
    receives `resumed_at` (the step this process started at) and `prior_wall_s` (the training-loop seconds of the
    processes before it; None when a resumed state predates the field), so a resumed run's time is its whole time."""
    with cuda_settings(s):
        return _pretrain(algorithm, train, heldout, s, out_dir, tokenizer, log, show_progress, history,
                         clock if clock is not None else {})


def _pretrain(algorithm: Algorithm, train: Blocks, heldout: Blocks, s: PretrainSettings, out_dir: Path,
              tokenizer, log, show_progress: bool, history: list | None, clock: dict) -> dict[str, float]:
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)
    objective = algorithm.objective.to(s.device)
    optimizer = make_optimizer(objective, s.lr, s.weight_decay, s.adam_eps, s.betas, s.bias_correction,
                               fused=s.fused_adam)
    scheduler = linear_schedule(optimizer, s.steps, s.warmup_steps)
    rng = torch.Generator(device=s.device).manual_seed(s.seed)
    state_path, step, evals, prior_wall = out_dir / "state.pt", 0, [], 0.0
    if state_path.exists():
        state = torch.load(state_path, map_location=s.device, weights_only=False)
        algorithm.load_state_dict(state["algorithm"])
        objective.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.set_state(state["rng"].cpu() if s.device == "cpu" else state["rng"])
        step, evals = state["step"], state.get("evals")  # None: a state from before evals were kept
        prior_wall = state.get("wall_s")  # None: a state from before the field
        print(f"[pretrain] resuming from step {step} of {s.steps} ({state_path})", file=sys.stderr, flush=True)
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])
    if s.compile != "off":  # in place: parameter names, hence state dicts and checkpoints, stay as they are
        objective.compile(mode=None if s.compile == "default" else s.compile)
    ckpt_steps = {max(1, round(f * s.steps)): f for f in s.checkpoints}
    clock.update(resumed_at=step, prior_wall_s=prior_wall)
    t_start = time.perf_counter()
    meter, t_log, tokens, checked = RTDMeter(), time.perf_counter(), 0, step  # steps up to `checked` are finite
    objective.train()

    def feed(i: int) -> tuple[Batch, int]:
        return load_batch(train, batch_rows(len(train), s.batch_size, i, s.seed), s.device)

    upcoming = feed(step) if step < s.steps else None
    with progress.bar(s.steps, "pretrain", show_progress, done=step) as bar:
        while step < s.steps:
            # No host reads inside a step (issue 15): losses and counts stay on the device until a sync point.
            algorithm.on_step(step, s.steps)
            batch, n_tokens = upcoming
            optimizer.zero_grad(set_to_none=True)
            micro = batch.split(s.batch_size // s.grad_accumulation) if s.grad_accumulation > 1 else [batch]
            for part in micro:  # gradient accumulation: the step's gradient is the mean of the micro-batches'
                with torch.autocast(s.device, dtype=torch.bfloat16, enabled=s.precision == "bf16"):
                    out = algorithm.loss(part, rng)
                (out.loss / len(micro) if len(micro) > 1 else out.loss).backward()
                meter.add(out)
            torch.nn.utils.clip_grad_norm_(objective.parameters(), s.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            tokens += n_tokens
            if step < s.steps:  # the host prepares the next batch while the device runs this step
                upcoming = feed(step)
            logs, evals_now, saves = (step % s.log_every == 0 or step == s.steps, step % s.eval_every == 0,
                                  step % s.save_every == 0 or step in ckpt_steps or step == s.steps)
            if not (logs or evals_now or saves):
                bar.update(1)
                continue
            # A sync point: one read of the sums; a non-finite loss fails the unit before anything is saved.
            sums = meter.read()
            if not math.isfinite(sums["loss"]):
                raise NonFiniteLoss(f"pre-training loss is {sums['loss'] / meter.n} (mean) at steps "
                                    f"{checked + 1}-{step} (checked every {s.log_every} steps)")
            checked = step
            if logs:
                now = time.perf_counter()
                metrics = {f"train/{k}": v for k, v in meter.metrics(sums).items()}
                metrics["train/lr"] = scheduler.get_last_lr()[0]
                metrics["train/tokens_per_s"] = tokens / max(now - t_log, 1e-9)
                log(metrics, step)
                bar.update(0, f"loss {metrics['train/loss']:.3f} rec {metrics.get('train/disc_recall', 0):.2f}")
                meter, t_log, tokens = RTDMeter(), now, 0
            if evals_now or step == s.steps:
                result = evaluate(algorithm, heldout, s, train)
                log({f"eval/{k}": v for k, v in result.items()}, step)
                if evals is not None:
                    evals.append({"step": step, **result})
            if step in ckpt_steps:
                save_checkpoint(objective, tokenizer, checkpoint_dir(out_dir, ckpt_steps[step]))
            if saves:
                _save_state(state_path, algorithm, optimizer, scheduler, step, rng, evals,
                            None if prior_wall is None else prior_wall + time.perf_counter() - t_start)
            bar.update(1)
    if history is not None and evals:
        history.extend(evals)
    if evals and evals[-1]["step"] == s.steps:  # the loop's last evaluation is the final one (same fixed fakes)
        return {k: v for k, v in evals[-1].items() if k != "step"}
    return evaluate(algorithm, heldout, s, train)
