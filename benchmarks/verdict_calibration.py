"""How often does a verdict lie? The false-verdict rate at a true difference of 0, and the power at the paper's
effect, of the harness's Multi-Bootstrap interval (electra_bench/stats.py), under the noise measured in results/.

Model: a run's score is  mu_cell + a_(cell, pretraining seed) + e_(cell, pretraining seed, fine-tuning seed), with
a ~ N(0, sd_pre^2) and e ~ N(0, sd_ft^2); two cells that share their seed labels (paired, as in a suite). For each
task noise (SST-2, CoNLL-2003 at the cpu scale), noise scenario, design (1/3/5 pretraining x 3/5/10 fine-tuning
seeds) and true difference, `--sims` suites are simulated and judged with `stats.multi_bootstrap` exactly as
verdicts.py does (a decisive verdict when the 95% interval excludes 0). Reported: the false-verdict rate at 0 with its
Monte-Carlo error, the coverage, the same for the plain percentile interval (Sellam et al.'s) for comparison, and
the power (a decisive verdict of the right sign) at the paper's effect.

Noise from the committed records (results/**/records.jsonl, one copy per run key):
- sd_ft: the pooled within-(cell, pretraining seed) standard deviation over fine-tuning seeds, per task.
- sd_pre, scenario "direct": from cells run with two or more pretraining seeds, when records have them (the variance
  of the pretraining-seed means minus the fine-tuning share, pooled over cells).
- scenario "between variants": until then every cell has one pretraining seed, so the closest measurement is the
  spread of the means of the full-budget ELECTRA variants whose claims the runs could not tell apart (the
  generator-size, lambda and tying cells), minus the fine-tuning share: it attributes any true variant effect to
  pretraining seeds (an overestimate where the variants differ) and is near 0 at a budget where nothing transfers.
- scenario "between variants, upper bound": the whole spread of those means (fine-tuning share included).
- scenario "paper ratio": sd_pre = 1.16 sd_ft, the paper scale's ratio (14 re-pretrainings of ELECTRA-Small spread
  0.57 GLUE; fine-tuning SST-2 10 times spreads 0.49; electra-reference.md): the case MultiBERTs warns about.
The paper's effect: Table 1, ELECTRA-Small 79.9 vs BERT-Small 75.1 GLUE = 4.8 points, simulated (i) as 4.8 points of
our metric and (ii) standardised: 4.8 / the paper's run spread (0.65: 0.57 pretraining and 0.32 fine-tuning of a
GLUE mean) times our run spread.

    python benchmarks/verdict_calibration.py               # writes results/benchmarks/verdict_calibration.{json,md}
    python benchmarks/verdict_calibration.py --sims 200    # a quick look
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from electra_bench.results import aggregate, read_records
from electra_bench.stats import N_RESAMPLES, Grid, multi_bootstrap
from electra_bench.verdicts import MIN_PRETRAIN_SEEDS

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "results" / "benchmarks"
TASKS = ("sst2", "conll2003")
DESIGNS = [(p, f) for p in (1, 3, 5) for f in (3, 5, 10)]
PAPER_EFFECT = 79.9 - 75.1  # Table 1, GLUE dev
PAPER_RUN_SD = math.hypot(0.57, 0.32)  # pretraining-seed sd 0.57 GLUE; fine-tuning sd of a GLUE mean ~0.32
PAPER_RATIO = 0.57 / 0.49  # pretraining sd (GLUE) / fine-tuning sd (SST-2), electra-reference.md
# Full-budget ELECTRA variants of the cpu-scale paper suites whose claims were inconclusive (generator size, lambda,
# tying): their spread is the closest committed measure of pretraining-seed variance while each has one seed.
VARIANT_SUITES = ("paper/fig3_generator_size", "paper/disc_weight", "paper/sec32_tying")


def committed_runs() -> list[dict]:
    """Every committed fine-tuning record, one per run key (suites adopt each other's units)."""
    seen, out = set(), []
    for path in sorted((REPO / "results").rglob("records.jsonl")):
        for r in read_records(path):
            if r["unit"] == "finetune" and r["run_key"] not in seen:
                seen.add(r["run_key"])
                out.append(r)
    return out


def noise(runs: list[dict], task: str) -> dict:
    """sd_ft and the sd_pre of each scenario for one task, with what they rest on."""
    stats = [s for s in aggregate([r for r in runs if r["task"] == task]) if s.n >= 2]
    groups = []  # kept runs per (cell, pretraining seed)
    for s in stats:
        for p in dict.fromkeys(s.pretrain_seeds):
            groups.append(np.array([v for v, q in zip(s.values, s.pretrain_seeds) if q == p]))
    dfw = sum(len(g) - 1 for g in groups)
    sd_ft = math.sqrt(sum(((g - g.mean()) ** 2).sum() for g in groups) / dfw)
    out = {"task": task, "sd_ft": sd_ft, "sd_ft_df": dfw, "scenarios": {}}
    multi = [s for s in stats if s.n_pretrain >= 2]
    if multi:
        comps = []
        for s in multi:
            means = [np.mean([v for v, q in zip(s.values, s.pretrain_seeds) if q == p])
                     for p in dict.fromkeys(s.pretrain_seeds)]
            comps.append(np.var(means, ddof=1) - sd_ft ** 2 * len(means) / s.n)
        out["scenarios"]["direct"] = {"sd_pre": math.sqrt(max(0.0, float(np.mean(comps)))),
                                      "from": f"{len(multi)} cells with 2+ pretraining seeds"}
    means = {}  # one entry per distinct set of runs: a cell shared by two suites (same run keys) counts once
    for suite in VARIANT_SUITES:
        recs = [r for r in read_records(REPO / "results" / suite / "records.jsonl") if r["task"] in (task, None)]
        pretrained = {r["cell"] for r in recs if r["unit"] == "pretrain"}  # not the random-init control
        for v in aggregate(recs):
            keys = frozenset(r["run_key"] for r in recs if r["cell"] == v.cell and r["unit"] == "finetune")
            if v.n >= 2 and v.cell in pretrained and "unigram" not in v.cell:  # unigram: degenerate fine-tunes
                means[keys] = (v.mean, v.n)
    m = np.array([v for v, _ in means.values()])
    share = float(np.mean([sd_ft ** 2 / n for _, n in means.values()]))
    between = float(np.var(m, ddof=1))
    out["scenarios"]["between variants"] = {"sd_pre": math.sqrt(max(0.0, between - share)),
                                            "from": f"{len(m)} ELECTRA variant cells, minus the fine-tuning share"}
    out["scenarios"]["between variants, upper bound"] = {"sd_pre": math.sqrt(between),
                                                         "from": f"{len(m)} ELECTRA variant cells, whole spread"}
    out["scenarios"]["paper ratio"] = {"sd_pre": PAPER_RATIO * sd_ft, "from": "0.57 / 0.49 x sd_ft (paper scale)"}
    return out


def simulate(sd_pre: float, sd_ft: float, P: int, F: int, delta: float, sims: int, rng, resamples: int) -> dict:
    """Judge `sims` simulated pairs of cells; rates of decisive verdicts (and right-signed ones), coverage."""
    labels = (tuple(range(P)), tuple(range(F)))
    a = delta + rng.normal(0, sd_pre, (sims, P, 1)) + rng.normal(0, sd_ft, (sims, P, F))
    b = rng.normal(0, sd_pre, (sims, P, 1)) + rng.normal(0, sd_ft, (sims, P, F))
    dec = right = cover = pct_dec = pct_cover = 0
    mdes = []
    for i in range(sims):
        d = multi_bootstrap([Grid(a[i], *labels)], [Grid(b[i], *labels)], n_resamples=resamples, seed=i)
        lo, hi = d.ci_low, d.ci_high
        dec += lo > 0 or hi < 0
        right += (lo > 0) if delta > 0 else (lo > 0 or hi < 0)
        cover += lo <= delta <= hi
        pct_dec += d.percentile[0] > 0 or d.percentile[1] < 0
        pct_cover += d.percentile[0] <= delta <= d.percentile[1]
        mdes.append(d.mde)
    return {"decisive": dec / sims, "right": right / sims, "coverage": cover / sims,
            "percentile_decisive": pct_dec / sims,
            "percentile_coverage": pct_cover / sims, "median_mde": float(np.nanmedian(mdes))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sims", type=int, default=3000, help="simulated suites per design at zero effect")
    ap.add_argument("--power-sims", type=int, default=400, help="simulated suites per design at the paper's effect")
    ap.add_argument("--resamples", type=int, default=N_RESAMPLES, help="Multi-Bootstrap draws per simulated suite "
                    "(the harness's)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args(argv)
    t0, rng, runs = time.perf_counter(), np.random.default_rng(0), committed_runs()
    measured, rows = [noise(runs, t) for t in TASKS], []
    for nz in measured:
        sd_ft = nz["sd_ft"]
        for scenario, sc in nz["scenarios"].items():
            run_sd = math.hypot(sc["sd_pre"], sd_ft)
            effects = {"paper, points": PAPER_EFFECT, "paper, standardised": PAPER_EFFECT / PAPER_RUN_SD * run_sd}
            for P, F in DESIGNS:
                zero = simulate(sc["sd_pre"], sd_ft, P, F, 0.0, args.sims, rng, args.resamples)
                row = {"task": nz["task"], "noise": scenario, "sd_pre": sc["sd_pre"], "sd_ft": sd_ft,
                       "pretrain_seeds": P, "finetune_seeds": F, "false_verdict_rate": zero["decisive"],
                       "mc_error": 3 * math.sqrt(0.05 * 0.95 / args.sims), "coverage": zero["coverage"],
                       "percentile_false_verdict_rate": zero["percentile_decisive"],
                       "percentile_coverage": zero["percentile_coverage"], "median_mde": zero["median_mde"],
                       "refused": P < MIN_PRETRAIN_SEEDS}
                for name, delta in effects.items():
                    row[f"power ({name})"] = simulate(sc["sd_pre"], sd_ft, P, F, delta, args.power_sims, rng,
                                                      args.resamples)["right"]
                    row[f"effect ({name})"] = delta
                rows.append(row)
                print(f"{nz['task']:9s} {scenario:30s} {P}x{F:<2d} false {row['false_verdict_rate']:.3f} "
                      f"(percentile {row['percentile_false_verdict_rate']:.3f}) "
                      f"power {row['power (paper, points)']:.2f}",
                      flush=True)
    wall = time.perf_counter() - t0
    data = {"benchmark": "verdict_calibration", "command": "python benchmarks/verdict_calibration.py " +
            " ".join(argv or []), "sims": args.sims, "power_sims": args.power_sims, "resamples": args.resamples,
            "min_pretrain_seeds": MIN_PRETRAIN_SEEDS, "noise": measured, "designs": rows, "wall_s": wall}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "verdict_calibration.json").write_text(json.dumps(data, indent=1) + "\n")
    (args.out / "verdict_calibration.md").write_text(markdown(data))
    print(f"wrote {args.out}/verdict_calibration.{{json,md}} in {wall:.0f} s")


def markdown(data: dict) -> str:
    lines = ["# Verdict calibration: false verdicts at zero effect, power at the paper's effect", "",
             f"Command: `{data['command'].strip()}` ({data['sims']} simulated suites per design at zero effect, "
             f"{data['power_sims']} at the paper's effect, {data['resamples']} Multi-Bootstrap draws each; "
             f"{data['wall_s']:.0f} s). Model, noise estimates and assumptions: the docstring of "
             "`benchmarks/verdict_calibration.py`.", "", "## Noise measured from results/", "",
             "| task | sd fine-tuning (df) | scenario | sd pretraining | from |", "|---|---|---|---|---|"]
    for nz in data["noise"]:
        for name, sc in nz["scenarios"].items():
            lines.append(f"| {nz['task']} | {nz['sd_ft']:.2f} ({nz['sd_ft_df']}) | {name} | {sc['sd_pre']:.2f} | "
                         f"{sc['from']} |")
    lines += ["", f"## Designs (pretraining x fine-tuning seeds); decisive verdicts need {data['min_pretrain_seeds']}+ "
              "pretraining seeds", "",
              "False verdict: the 95% interval excludes 0 when the true difference is 0 (nominal 5%; ± "
              f"{data['designs'][0]['mc_error']:.3f} Monte-Carlo error, 3 se: a procedure at exactly 5% reads "
              "0.04-0.06 here). Percentile: the plain percentile interval of the same draws. Power: a right-signed "
              "decisive verdict at the paper's 4.8 points, and at its standardised size (effect / run spread, the "
              "paper's, times ours). MDE: median over the simulations.",
              "", "| task | noise | design | false verdicts | percentile's | coverage | power (4.8 pts) | "
              "power (standardised: effect) | median MDE | harness |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in data["designs"]:
        ok = r["false_verdict_rate"] <= 0.05 + r["mc_error"]
        harness = "refused (too few pretraining seeds)" if r["refused"] else ("decides" if ok else "**over 5%**")
        lines.append(f"| {r['task']} | {r['noise']} | {r['pretrain_seeds']}x{r['finetune_seeds']} | "
                     f"{r['false_verdict_rate']:.3f} | {r['percentile_false_verdict_rate']:.3f} | "
                     f"{r['coverage']:.3f} | "
                     f"{r['power (paper, points)']:.2f} | {r['power (paper, standardised)']:.2f}: "
                     f"{r['effect (paper, standardised)']:.1f} | {r['median_mde']:.2f} | {harness} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
