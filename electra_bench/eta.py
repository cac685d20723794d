"""Time estimates of a plan's units, from the wall times of earlier records on this kind of machine (`plan`).

Pre-training: the unit's train FLOPs over the median FLOP/s of the finished pre-training records under the results
dir (`pretrain_rates`, per precision), both counted by one FLOPs convention: the compute-faithful one where such
records exist (embedding lookups as gathers: what the machine does, so its FLOP/s carries across vocabulary sizes;
the official count's embedding matmul inflates a tiny model's FLOPs ~2x), else the official one.
Fine-tuning: a record carries `wall_s`, `n_train` and `n_dev` but not its config, so fine-tunes are timed from the
finished fine-tunes of this suite, whose configs the plan knows: their median FLOP/s on the same task (analytic
fine-tuning FLOPs, `finetune_flops`, over wall_s; dynamic padding makes tokens per example a property of the task)
applied to the unit's own FLOPs, with n_train and n_dev read off those records (the same train/dev subsampling).
A unit with no such record gets no estimate, and the total says how many units it leaves out.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from statistics import median

from electra_bench import flops
from electra_bench.schema import RunConfig
from electra_bench.suite import Plan, Unit, read_records_safe
from electra_bench.tasks import TaskSpec

TRAIN_PASSES = 3  # a training example costs forward + backward (about 2 x forward); a dev example one forward


CONVENTIONS = ("compute", "official")  # the one whose rates time a pre-training: the first with records


def counted_by(run: RunConfig, convention: str = "official") -> RunConfig:
    """The run with its FLOPs counted by `convention` (that of the measured rates they are divided by)."""
    return run.model_copy(update={"pretrain": run.pretrain.model_copy(update={"flops_convention": convention})})


def pretrain_rates(results_dir: Path, convention: str = "official") -> dict[str, float]:
    """Median train_flops / wall_s of the finished pre-training records under results/, per precision; only records
    counted by `convention` (all before issue 14 were official), so rates of both conventions never mix."""
    rates: dict[str, list[float]] = {}
    for path in results_dir.rglob("records.jsonl"):
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("unit") == "pretrain" and rec.get("wall_s") and rec.get("train_flops") \
                    and not rec.get("wall_s_partial") \
                    and rec.get("flops_convention", "official") == convention:
                precision = "bf16" if rec.get("precision", "bf16") == "bf16" else "fp32"
                rates.setdefault(precision, []).append(rec["train_flops"] / rec["wall_s"])
    if not rates:
        return {}
    out = {k: median(v) for k, v in rates.items()}
    out.setdefault("fp32", out.get("bf16", 0) / 2)  # bf16 autocast ~2x fp32 on these CPUs (levers.md)
    out.setdefault("bf16", out["fp32"] * 2)
    return out


def finetune_flops(run: RunConfig, spec: TaskSpec, n_train: float, n_dev: float) -> float:
    """Analytic FLOPs of one fine-tune: every epoch over n_train examples (forward and backward), then n_dev
    forward; each example counted at max_seq_length, embeddings as gathers (what a CPU or GPU does)."""
    from .build import disc_dims  # deferred: torch (plan only imports it here)

    epochs = run.finetune.epochs if run.finetune.epochs is not None else spec.epochs
    per_example = flops.inference_flops(flops.EncoderDims.from_dims(disc_dims(run.model)),
                                        run.finetune.max_seq_length, "compute")
    return per_example * (TRAIN_PASSES * epochs * n_train + n_dev)


def _sizes_key(unit: Unit) -> tuple:
    ft = unit.cell.config.finetune  # what decides n_train and n_dev of a task's fine-tune
    return unit.task, ft.train_examples, ft.dev_examples, ft.double_unordered


@dataclass(frozen=True)
class FinetuneTimings:
    """What this suite's finished fine-tunes measured: FLOP/s per task and (n_train, n_dev) per subsampling."""

    rates: Mapping[str, float]
    sizes: Mapping[tuple, tuple[float, float]]


def finetune_timings(plan: Plan, records: Iterable[dict]) -> FinetuneTimings:
    """Rates and sizes from the records of this plan's fine-tune units (matched by run key) that carry wall_s."""
    units = {u.key: u for u in plan.units if u.kind == "finetune"}
    rates: dict[str, list[float]] = {}
    sizes: dict[tuple, list[tuple[float, float]]] = {}
    for rec in records:
        unit = units.get(rec["run_key"])
        if unit is None or not rec.get("wall_s") or not rec.get("n_train") or rec.get("n_dev") is None:
            continue
        spec = plan.suite.tasks[unit.task]
        rates.setdefault(unit.task, []).append(
            finetune_flops(unit.cell.config, spec, rec["n_train"], rec["n_dev"]) / rec["wall_s"])
        sizes.setdefault(_sizes_key(unit), []).append((rec["n_train"], rec["n_dev"]))
    return FinetuneTimings({t: median(v) for t, v in rates.items()},
                           {k: (median(n for n, _ in v), median(d for _, d in v)) for k, v in sizes.items()})


def estimates(plan: Plan) -> dict[str, float]:
    """Estimated seconds per unit (by run key), for the units that can be timed (module docstring)."""
    from .units import flops_per_step, planned_steps  # deferred: torch

    results_dir = Path(plan.suite.config.results_dir)
    convention, speed = next(((c, r) for c in CONVENTIONS if (r := pretrain_rates(results_dir, c))), ("", {}))
    timings = finetune_timings(plan, read_records_safe(plan.records_path))
    out = {}
    for u in plan.units:
        run = u.cell.config
        if u.kind == "pretrain" and speed:
            vocab = run.tokenizer.train_vocab_size or flops.BERT_VOCAB
            total = flops_per_step(counted_by(run, convention), vocab) * planned_steps(run, vocab)
            out[u.key] = total / speed[run.pretrain.precision]
        elif u.kind == "finetune" and u.task in timings.rates and _sizes_key(u) in timings.sizes:
            n_train, n_dev = timings.sizes[_sizes_key(u)]
            out[u.key] = finetune_flops(run, plan.suite.tasks[u.task], n_train, n_dev) / timings.rates[u.task]
    return out


@dataclass(frozen=True)
class Total:
    """The units still to run (pending, failed or blocked: `run` runs them all) and their summed estimate."""

    seconds: float
    units: int
    unestimated: int  # units to run without an estimate (not in `seconds`)


def total(plan: Plan, seconds: Mapping[str, float]) -> Total:
    todo = [u for u in plan.units if u.status != "done"]
    return Total(sum(seconds[u.key] for u in todo if u.key in seconds), len(todo),
                 sum(u.key not in seconds for u in todo))


def duration(seconds: float) -> str:
    """`~40 s`, `~12 min`, `~3 h 05 min`."""
    if seconds < 90:
        return f"~{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"~{seconds / 60:.0f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"~{hours} h {minutes:02d} min"
