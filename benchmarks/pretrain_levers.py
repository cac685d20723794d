"""Which levers move a CPU-scale ELECTRA discriminator off the majority-class plateau?

Runs short pre-trainings that differ in one setting each from a base config, side by side in one process, and
records the held-out RTD metrics (disc recall/AUC, generator accuracy) along the way and the throughput.
Writes results/pretraining_effect/levers.jsonl (one line per run, appended as each finishes) and levers.md.

    python benchmarks/pretrain_levers.py --steps 800 --only base,vocab8k
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from electra_bench.config import deep_merge
from electra_bench.schema import RunConfig
from electra_bench.tasks import default_data_root
from electra_bench.units import Env, run_pretrain

BASE = {
    "model": {"size": "tiny", "dropout": 0.0, "attention_dropout": 0.0},  # no dropout: ~16% faster (feasibility)
    "corpus": {"sources": ["corpus/wikipedia-en-2015/enwiki-2015-0[0-1].txt.gz", "corpus/bbc-news/*.txt.gz",
                           "corpus/reuters-21578/*.txt.gz"], "max_bytes": 12_000_000},
    "tokenizer": {"train_vocab_size": 8192},
    "pretrain": {"batch_size": 32, "lr": 5e-4, "warmup_fraction": 0.05, "precision": "bf16",
                 "eval_every": 100, "eval_batches": 4, "checkpoints": [1.0]},
}
LEVERS = {
    "base": {},
    "vocab30k": {"tokenizer": {"train_vocab_size": None}},
    "lr2e-3": {"pretrain": {"lr": 2e-3}},
    "lr1e-4": {"pretrain": {"lr": 1e-4}},
    "mask25": {"pretrain": {"mask_prob": 0.25}},
    "gen1_8": {"pretrain": {"generator_size": 0.125}},
    "gen1_2": {"pretrain": {"generator_size": 0.5}},
    "temp1.5": {"pretrain": {"temperature": 1.5}},
    "temp2": {"pretrain": {"temperature": 2.0}},
    "vocab4k": {"tokenizer": {"train_vocab_size": 4096}},
    "seq64": {"corpus": {"max_seq_length": 64}, "pretrain": {"batch_size": 64}},
    "mini": {"model": {"size": "mini"}},
    "fp32": {"pretrain": {"precision": "fp32"}},
    # G is D (Paper §3.2 "tie all weights", 84.4 GLUE): the shared encoder also learns from the MLM loss
    "tie_none": {"pretrain": {"tying": "none"}},
    "unigram": {"pretrain": {"generator_size": "unigram"}},
    "tie_all": {"pretrain": {"generator_size": 1.0, "tying": "all"}},
    # §3.2: train G (same size) alone, then initialise D from G and train D; without that initialisation D "would
    # sometimes fail to learn at all beyond the majority class"
    "two_stage_lr1e-3": {"pretrain": {"generator_size": 1.0, "algorithm": "two_stage", "lr": 1e-3}},
    "tie_all_lr1e-3": {"pretrain": {"generator_size": 1.0, "tying": "all", "lr": 1e-3}},
    "mask25_lr2e-3": {"pretrain": {"mask_prob": 0.25, "lr": 2e-3}},
    # issue 14: a schedule for short budgets (a longer warmup at a higher peak: does the discriminator collapse?),
    # a stronger generator, a higher mask rate, and the MLM baseline's own schedule
    "lr1e-3_warm10": {"pretrain": {"lr": 1e-3, "warmup_fraction": 0.1}},
    "mask30": {"pretrain": {"mask_prob": 0.3}},
    "mlm": {"pretrain": {"objective": "mlm"}},
    "mlm_lr1e-3_warm10": {"pretrain": {"objective": "mlm", "lr": 1e-3, "warmup_fraction": 0.1}},
}
# Records carrying lookup_auc were scored the issue-14 way (held-out fakes at T=1, whatever the training
# temperature); earlier ones scored the fakes at the training temperature and are shown apart.
NEW_METRIC = "lookup_auc"


def report(out: Path) -> None:
    """levers.md (one row per lever, last record wins) and levers.png (held-out disc AUC vs step) from levers.jsonl."""
    rows = {}
    for line in (out / "levers.jsonl").read_text().splitlines():
        rec = json.loads(line)
        issue14 = NEW_METRIC in rec["final"] or "token_cosine" in rec["final"]
        rows[(rec["lever"], issue14)] = rec  # a lever re-measured the issue-14 way gets its own row
    lines = ["# CPU-scale levers: does the discriminator leave the majority-class plateau?", "",
             "Each row: one short pre-training (tiny model, batch 32, seq 128, bf16 unless stated) that differs from",
             "`base` in one setting; metrics on held-out blocks at the last step. A discriminator on the plateau",
             "predicts 'original' everywhere: recall ~0, AUC ~0.5. tokens/s is only indicative: other jobs shared the",
             "2 cores during these runs (benchmarks/pretrain_step.py measures speed side by side).", "",
             "Command: `python benchmarks/pretrain_levers.py --steps N --only LEVERS` (then `--report`).", ""]
    old = {name: r for (name, issue14), r in rows.items() if not issue14}
    new = {name: r for (name, issue14), r in rows.items() if issue14}
    if new:
        lines += ["## Issue 14: held-out fakes at temperature 1, with the context-free baseline and token cosine", "",
                  "Held-out RTD metrics on fakes sampled at T=1 whatever the training temperature;",
                  "`context-free AUC`: a lookup of",
                  "P(replaced | token id) estimated on T=1 fakes of training blocks, scored on the same held-out fakes",
                  "(a discriminator above it uses context); `token cos`: mean cosine between the top-layer states of a",
                  "held-out sequence's tokens (~1: collapsed representations). MLM rows: gen MLM acc is the model's",
                  "own held-out MLM accuracy.", "",
                  "| lever | change | steps | tokens | disc AUC | context-free AUC | disc recall "
                  "| gen MLM acc | token cos | wall s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        nan = float("nan")
        for name, r in new.items():
            m = r["final"]
            lines.append(f"| {name} | `{json.dumps(r['overrides'])}` | {r['steps']} | "
                         f"{r['steps'] * 32 * 128 / 1e6:.1f}M | {m.get('disc_auc', nan):.3f} | "
                         f"{m.get(NEW_METRIC, nan):.3f} | "
                         f"{m.get('disc_recall', nan):.3f} | {m.get('gen_mlm_acc', nan):.3f} | "
                         f"{m.get('token_cosine', nan):.3f} | {r['wall_s']:.0f} |")
        lines += ["", "## Before issue 14: held-out fakes at the training temperature", ""]
    lines += ["| lever | change | steps | disc recall | disc AUC | disc precision | gen MLM acc | replaced | tokens/s "
              "| wall s |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in old.items():
        m = r["final"]
        lines.append(f"| {name} | `{json.dumps(r['overrides'])}` | {r['steps']} | {m.get('disc_recall', 0):.3f} | "
                     f"{m.get('disc_auc', float('nan')):.3f} | {m.get('disc_precision', 0):.3f} | "
                     f"{m.get('gen_mlm_acc', float('nan')):.3f} | {m.get('replaced_frac', 0):.3f} | "
                     f"{r['tokens_per_s']:.0f} | {r['wall_s']:.0f} |")
    (out / "levers.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, issue14), r in rows.items():
        name = f"{name} (T=1 eval)" if issue14 else name
        pts = [(c["step"], c["eval/disc_auc"]) for c in r["curve"] if "eval/disc_auc" in c]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=name)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("pre-training step")
    ax.set_ylabel("held-out discriminator AUC")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "levers.png", dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--only", default=",".join(LEVERS), help="comma-separated lever names")
    ap.add_argument("--out", default="results/pretraining_effect")
    ap.add_argument("--work", default="work/levers")
    ap.add_argument("--report", action="store_true", help="only render levers.md / levers.png from levers.jsonl")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.report:
        report(out)
        return
    env = Env(default_data_root(), Path(args.work), show_progress=False)
    for name in args.only.split(","):
        cfg = deep_merge(deep_merge(BASE, {"pretrain": {"steps": args.steps}}), LEVERS[name])
        run = RunConfig.model_validate(cfg)
        curve = []
        t0 = time.perf_counter()
        res = run_pretrain(run, env, Path(args.work) / f"{name}-{args.steps}",
                           log=lambda m, s, curve=curve: curve.append({"step": s, **m}))
        speeds = [c["train/tokens_per_s"] for c in curve if "train/tokens_per_s" in c][1:]  # first: warm-up
        rec = {"lever": name, "overrides": LEVERS[name], "steps": res["steps"], "wall_s": time.perf_counter() - t0,
               "train_flops": res["train_flops"], "params": res["params"], "final": res["metrics"],
               "tokens_per_s": sum(speeds) / max(len(speeds), 1),
               "curve": [{k: v for k, v in c.items() if k == "step" or k.startswith("eval/")} for c in curve
                         if any(k.startswith("eval/") for k in c)]}
        with open(out / "levers.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        m = res["metrics"]
        print(f"{name}: recall {m.get('disc_recall', 0):.3f} auc {m.get('disc_auc', 0):.3f} "
              f"gen_acc {m.get('gen_mlm_acc', 0):.3f} wall {rec['wall_s']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
