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
    "seq64": {"corpus": {"max_seq_length": 64}, "pretrain": {"batch_size": 64}},
    "mini": {"model": {"size": "mini"}},
    "fp32": {"pretrain": {"precision": "fp32"}},
    # G is D (Paper §3.2 "tie all weights", 84.4 GLUE): the shared encoder also learns from the MLM loss
    "tie_none": {"pretrain": {"tying": "none"}},
    "unigram": {"pretrain": {"generator_size": "unigram"}},
    "tie_all": {"pretrain": {"generator_size": 1.0, "tying": "all"}},
    "mask25_lr2e-3": {"pretrain": {"mask_prob": 0.25, "lr": 2e-3}},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--only", default=",".join(LEVERS), help="comma-separated lever names")
    ap.add_argument("--out", default="results/pretraining_effect")
    ap.add_argument("--work", default="work/levers")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = Env(default_data_root(), Path(args.work), show_progress=False)
    for name in args.only.split(","):
        cfg = deep_merge(deep_merge(BASE, {"pretrain": {"steps": args.steps}}), LEVERS[name])
        run = RunConfig.model_validate(cfg)
        curve = []
        t0 = time.perf_counter()
        res = run_pretrain(run, env, Path(args.work) / f"{name}-{args.steps}",
                           log=lambda m, s: curve.append({"step": s, **m}))
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
