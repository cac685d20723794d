"""What one unit of a suite does: a pre-training cell, from a resolved `RunConfig` to checkpoints.

Turns config sections into plain arguments for tokenizer.py, corpus.py, build.py and pretrain.py, and caches the
expensive shared inputs (trained vocab, packed corpus) under the work dir, keyed by everything they depend on.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import corpus as corpus_mod
from . import flops
from .build import build_objective, disc_dims, electra_config
from .finetune import FinetuneSettings, finetune, save_hf_model
from .model.algorithms import ALGORITHMS
from .model.heads import EncoderWithHead, load_encoder
from .model.objectives import Vocab
from .pretrain import PretrainSettings, pretrain, save_generator
from .schema import RunConfig
from .sizes import generator_dims
from .tokenizer import file_digest, load_tokenizer, train_wordpiece


@dataclass(frozen=True)
class Env:
    """Where things are, and how to show progress; not part of any run's identity."""

    data_root: Path
    work_dir: Path
    show_progress: bool = True
    shared_cache: Path | None = None  # vocab and packed corpora, shared by every suite (keyed by their inputs)

    @property
    def cache_dir(self) -> Path:
        return self.shared_cache or self.work_dir / "cache"


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
    return name


_SAID: set[str] = set()


def warn_emulated_bf16(precision: str, device: str, field: str) -> None:
    """Once per process: bf16 autocast on a CPU without native bf16 (no AVX512-BF16 or AMX) is emulated, measured
    ~40x slower than fp32 on an AVX2-only host (1.2 vs 46 GFLOP/s, one thread). The unit runs as configured (the
    precision is part of its run key); the warning says how to make it fast."""
    if precision != "bf16" or device != "cpu" or field in _SAID:
        return
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the probe: say nothing rather than guess
        return
    if not native:
        _SAID.add(field)
        print(f"warning: {field}: bf16 on this CPU ({torch.backends.cpu.get_cpu_capability()}, no native bf16) is"
              f" emulated and ~40x slower than fp32; set {field}: fp32 (or --set {field}=fp32)", file=sys.stderr)


def _data_path(env: Env, rel: str) -> Path:
    p = Path(rel)
    return p if p.is_absolute() else env.data_root / p


def get_tokenizer(run: RunConfig, env: Env):
    """(tokenizer, identity). The identity is the vocab file's digest, so a retrained vocab changes run keys."""
    tok_cfg = run.tokenizer
    if tok_cfg.train_vocab_size is None:
        vocab = _data_path(env, tok_cfg.vocab)
        return load_tokenizer(vocab, tok_cfg.lowercase), f"vocab:{file_digest(vocab)}"
    files = corpus_mod.source_files(env.data_root, run.corpus.sources)
    key = corpus_mod.corpus_key(files, "train-wordpiece", {"size": tok_cfg.train_vocab_size,
                                                           "bytes": tok_cfg.train_max_bytes,
                                                           "lower": tok_cfg.lowercase})
    out = env.cache_dir / f"vocab-{key}"
    if not (out / "vocab.txt").exists():
        per_source = tok_cfg.train_max_bytes // len(files)
        texts = (line for src in files for doc in corpus_mod.iter_documents(src, per_source) for line in doc)
        tmp = env.cache_dir / f"vocab-{key}.{os.getpid()}.tmp"  # per process: workers may train one vocab at once
        train_wordpiece(texts, tok_cfg.train_vocab_size, tmp, tok_cfg.lowercase)
        corpus_mod.publish(tmp, out)
    return load_tokenizer(out / "vocab.txt", tok_cfg.lowercase), f"vocab:{file_digest(out / 'vocab.txt')}"


def get_blocks(run: RunConfig, tokenizer, tokenizer_id: str, env: Env, seed: int = 0):
    """(train blocks, held-out blocks) for the run's corpus, packed once and cached as Arrow."""
    c = run.corpus
    files = corpus_mod.source_files(env.data_root, c.sources)
    settings = {"len": c.max_seq_length, "bytes": c.max_bytes, "single": c.single_segment_prob,
                "short": c.short_seq_prob, "weights": c.weights, "seed": seed, "v": 1}
    key = corpus_mod.corpus_key(files, tokenizer_id, settings)
    env.cache_dir.mkdir(parents=True, exist_ok=True)
    blocks = corpus_mod.cached_blocks(env.cache_dir, key, lambda: corpus_mod.build_blocks(
        files, tokenizer, c.max_seq_length, c.max_bytes, seed, c.single_segment_prob, c.short_seq_prob, c.weights))
    n_held = min(c.heldout_blocks, len(blocks) // 10)
    train = corpus_mod.Blocks(blocks.input_ids[n_held:], blocks.token_type_ids[n_held:])
    held = corpus_mod.Blocks(blocks.input_ids[:n_held], blocks.token_type_ids[:n_held])
    return train, held


def flops_per_step(run: RunConfig, vocab_size: int, convention: str | None = None) -> float:
    """FLOPs of one step under `convention` (None: the run's `pretrain.flops_convention`)."""
    pre, dims = run.pretrain, disc_dims(run.model)
    disc = flops.EncoderDims.from_dims(dims, vocab_size)
    gen = None
    if pre.objective != "mlm" and pre.generator_size != "unigram":
        gen = flops.EncoderDims.from_dims(generator_dims(dims, float(pre.generator_size)), vocab_size)
    return flops.train_flops_per_step(disc, gen, pre.objective, run.corpus.max_seq_length, pre.batch_size,
                                      pre.mask_prob, convention or pre.flops_convention,
                                      pre.two_stage_switch if pre.algorithm == "two_stage" else None)


def planned_steps(run: RunConfig, vocab_size: int) -> int:
    """`pretrain.steps`, or the steps that spend `pretrain.budget_flops` (equal compute across cells, T1/T5)."""
    pre = run.pretrain
    if pre.budget_flops is None:
        return pre.steps
    return max(1, flops.steps_for_budget(pre.budget_flops, flops_per_step(run, vocab_size)))


def vocab_of(tokenizer) -> Vocab:
    special = sorted({tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
                      tokenizer.mask_token_id, tokenizer.unk_token_id})
    return Vocab(size=len(tokenizer), mask_id=tokenizer.mask_token_id, special_ids=tuple(special))


def settings_for(run: RunConfig, steps: int, device: str) -> PretrainSettings:
    pre = run.pretrain
    return PretrainSettings(
        steps=steps, batch_size=pre.batch_size, lr=pre.lr, warmup_steps=round(pre.warmup_fraction * steps),
        weight_decay=pre.weight_decay, adam_eps=pre.adam_eps, betas=(pre.adam_beta1, pre.adam_beta2),
        bias_correction=pre.adam_bias_correction, grad_clip=pre.grad_clip, eval_every=pre.eval_every,
        eval_batches=pre.eval_batches, checkpoints=tuple(pre.checkpoints), seed=pre.seed,
        precision=pre.precision, device=device, log_every=pre.log_every or min(50, max(1, steps // 20)),
        fused_adam=pre.fused_adam, compile=pre.compile, tf32=pre.tf32, grad_accumulation=pre.grad_accumulation,
        sdpa_backend=pre.sdpa_backend)


def run_pretrain(run: RunConfig, env: Env, out_dir: Path, log=lambda m, s: None) -> dict:
    """Pre-train one cell into `out_dir`; returns {"metrics", "train_flops", "params", "steps", "train_tokens",
    "evals"} and the FLOPs under each convention (`train_flops_official`, `train_flops_compute`; train_flops is the
    run's convention's). `evals`: every held-out evaluation, {"step", "tokens", **metrics} (empty when unknown).
    `resumed_at`, `prior_wall_s`: where this process started and the earlier processes' time (pretrain's clock)."""
    tokenizer, tok_id = get_tokenizer(run, env)
    train, held = get_blocks(run, tokenizer, tok_id, env)
    vocab = vocab_of(tokenizer)
    counts = None
    if run.pretrain.generator_size == "unigram":  # corpus frequencies of real tokens; never propose specials
        counts = torch.from_numpy(np.bincount(train.input_ids.ravel(), minlength=vocab.size))
        counts[list(vocab.special_ids)] = 0
    torch.manual_seed(run.pretrain.seed)  # the same seed gives the same initial weights
    objective = build_objective(run.model, run.pretrain, vocab, counts)
    pre = run.pretrain
    extra = {"switch_fraction": pre.two_stage_switch} if pre.algorithm == "two_stage" else {}
    algorithm = ALGORITHMS[pre.algorithm](objective, temperature_end=pre.temperature_end, **extra)
    steps = planned_steps(run, vocab.size)
    device = resolve_device(run.pretrain.device)
    warn_emulated_bf16(run.pretrain.precision, device, "pretrain.precision")
    settings = settings_for(run, steps, device)
    fps = flops_per_step(run, vocab.size)
    log({"pretrain/flops_per_step": fps, "pretrain/steps": steps, "pretrain/train_blocks": len(train)}, 0)
    history: list[dict] = []
    clock: dict = {}
    metrics = pretrain(algorithm, train, held, settings, out_dir, tokenizer, log, env.show_progress, history, clock)
    params = sum(p.numel() for p in objective.encoder().parameters())
    by_convention = {f"train_flops_{c}": flops_per_step(run, vocab.size, c) * steps for c in flops.CONVENTIONS}
    per_step = run.pretrain.batch_size * run.corpus.max_seq_length  # token slots (packed blocks: ~no padding)
    evals = [{"tokens": e["step"] * per_step, **e} for e in history]
    return {"metrics": metrics, "train_flops": fps * steps, "params": params, "steps": steps,
            "train_tokens": steps * per_step,
            "evals": evals, **clock, **by_convention}



def export_generator(run: RunConfig, out_dir: Path, checkpoint: Path) -> None:
    """Save the generator of a finished pre-training made before generators were saved, from its final state."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    objective = build_objective(run.model, run.pretrain, vocab_of(tokenizer))
    objective.load_state_dict(torch.load(out_dir / "state.pt", map_location="cpu", weights_only=False)["model"])
    save_generator(objective, tokenizer, checkpoint)


def finetune_settings(run: RunConfig, spec, seed: int, device: str):
    ft = run.finetune
    return FinetuneSettings(
        lr=ft.lr, layerwise_decay=ft.layerwise_lr_decay, official_layer_decay=ft.official_layer_decay,
        warmup_fraction=ft.warmup_fraction, weight_decay=ft.weight_decay, adam_eps=ft.adam_eps,
        batch_size=ft.batch_size, epochs=ft.epochs if ft.epochs is not None else spec.epochs,
        max_seq_length=ft.max_seq_length, train_examples=ft.train_examples, dev_examples=ft.dev_examples,
        head=ft.head, double_unordered=ft.double_unordered, precision=ft.precision, device=device, seed=seed)


def run_finetune(run: RunConfig, spec, seed: int, env: Env, encoder_source: str | None,
                 log=lambda m, s: None, predictions_dir: Path | None = None, robustness=None,
                 model_dir: Path | None = None) -> dict:
    """Fine-tune one (task, seed) from `encoder_source` (a save_pretrained dir or hub id; None = random init);
    `robustness` (robustness.RobustSettings): also score perturbed dev sets. With `finetune.save_model` set and a
    `model_dir`, the fine-tuned model is saved there in HF format (finetune.save_hf_model) and the result gains
    `saved_model` (the folder), `saved_model_weights` (best / last), `saved_model_step` and `saved_model_headline`
    (the dev headline of those weights; for `last`, the record's headline)."""
    from transformers import AutoTokenizer


    ft = run.finetune
    if encoder_source is None:
        tokenizer, _ = get_tokenizer(run, env)
        cfg = electra_config(disc_dims(run.model), len(tokenizer), run.model)
    else:
        tokenizer, cfg = AutoTokenizer.from_pretrained(encoder_source), None
    torch.manual_seed(seed)  # head (and, for random init, encoder) initialisation depends on the seed
    # fine-tuning dropout (finetune.dropout), not the pre-training one the encoder was saved with
    encoder = load_encoder(encoder_source, cfg, dropout=ft.dropout, attention_dropout=ft.attention_dropout)
    n_out = 1 if spec.kind == "regression" else len(spec.labels)
    model = EncoderWithHead(encoder, n_out, per_token=spec.kind == "tagging", head=run.finetune.head)
    device = resolve_device(run.finetune.device)
    warn_emulated_bf16(run.finetune.precision, device, "finetune.precision")
    settings = finetune_settings(run, spec, seed, device)
    from dataclasses import replace

    if run.finetune.eval_test and predictions_dir is not None:
        settings = replace(settings, predictions_dir=predictions_dir)
    save = ft.save_model if model_dir is not None else "none"
    settings = replace(settings, robustness=robustness, keep_best=save == "best")
    out = finetune(spec, model, tokenizer, settings, env.data_root, log, env.show_progress)
    best = out.pop("best")
    if save != "none":
        kept = best if save == "best" else {"step": out["steps"], "headline": out["headline"], "state": None}
        save_hf_model(model, tokenizer, spec, settings.max_seq_length, model_dir, kept["state"])
        out |= {"saved_model": str(model_dir), "saved_model_weights": save, "saved_model_step": kept["step"],
                "saved_model_headline": kept["headline"]}
    return out
