"""The CUDA paths: run on a machine with an NVIDIA GPU (the lent H200: `benchmarks/gpu_session.sh`); skipped on
CPU-only machines such as CI. They check the same model gives the same numbers on CUDA as on the CPU (fp32; bf16
autocast within bf16's precision), that a training step on CUDA under bf16 autocast learns, and that a whole
suite runs with `device: auto` picking the GPU."""
from __future__ import annotations

import json
import typing

import pytest
import torch
from conftest import tiny_model_config

from electra_bench.build import build_objective
from electra_bench.model.objectives import Batch
from electra_bench.optim import make_optimizer
from electra_bench.schema import PretrainConfig
from electra_bench.units import resolve_device

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on a GPU machine)")
OBJECTIVES = typing.get_args(PretrainConfig.model_fields["objective"].annotation)

from test_model import TINY_VOCAB, random_batch  # noqa: E402  (after the skip: the helpers need nothing else)


def _to(batch: Batch, device: str) -> Batch:
    return Batch(batch.input_ids.to(device), batch.attention_mask.to(device), batch.token_type_ids.to(device),
                 batch.padded)


def _inputs(batch: Batch) -> dict:
    return {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids}


def test_auto_device_is_cuda():
    assert resolve_device("auto") == "cuda"


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_discriminator_same_on_cuda_as_on_cpu(objective):
    torch.manual_seed(0)
    obj = build_objective(tiny_model_config(), PretrainConfig(objective=objective), TINY_VOCAB).eval()
    batch = random_batch(torch.Generator().manual_seed(1), 4, 24)
    enc = obj.encoder()
    with torch.no_grad():
        cpu = enc(**_inputs(batch), output_hidden_states=True).hidden_states[-1]
        enc.cuda()
        gpu = enc(**_inputs(_to(batch, "cuda")), output_hidden_states=True).hidden_states[-1]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = enc(**_inputs(_to(batch, "cuda")), output_hidden_states=True).hidden_states[-1].float()
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-4)
    assert (bf16.cpu() - cpu).abs().max() < 0.1  # bf16 keeps 8 bits of mantissa


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_bf16_training_step_on_cuda_learns(objective):
    torch.manual_seed(0)
    obj = build_objective(tiny_model_config(), PretrainConfig(objective=objective), TINY_VOCAB).cuda()
    opt = make_optimizer(obj, 1e-3, 0.01, 1e-6, (0.9, 0.999), True)
    batch = _to(random_batch(torch.Generator().manual_seed(2), 8, 24), "cuda")
    rng = torch.Generator(device="cuda")
    losses = []
    for _ in range(30):
        rng.manual_seed(0)  # same masking and samples every step: the loss on one batch must fall
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = obj(batch, rng=rng).loss
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_suite_runs_on_cuda_with_bf16(tmp_path):
    from test_suite_e2e import SUITE, make_data_root

    from electra_bench import cli
    from electra_bench.results import read_records

    make_data_root(tmp_path / "data")
    suite = tmp_path / "gpu.yaml"
    suite.write_text(SUITE.format(root=tmp_path / "data", work=tmp_path / "work", results=tmp_path / "results"))
    sets = ["pretrain.precision=bf16", "finetune.precision=bf16", "tracking.enabled=false"]
    assert cli.main(["run", str(suite), "--no-progress", *[a for s in sets for a in ("--set", s)]]) == 0
    records = read_records(tmp_path / "results" / "e2e" / "records.jsonl")
    assert {r["unit"] for r in records} == {"pretrain", "finetune"}
    assert all(all(v == v for v in r["metrics"].values()) for r in records)  # no NaN
    print(json.dumps([r["metrics"] for r in records if r["unit"] == "pretrain"]))


def test_gpu_options_pretrain_on_cuda(tmp_path):
    """Every GPU option of the schema at once on a real pre-training run: compile, fused AdamW, the flash SDPA
    kernel, gradient accumulation, bf16; and fused AdamW gives the losses of the unfused one (speed-only)."""
    from test_pretrain import SOURCES, Logs, vocab_of_fixture

    from electra_bench.schema import CorpusConfig, RunConfig, TokenizerConfig
    from electra_bench.units import Env, run_pretrain

    vocab = vocab_of_fixture(tmp_path / "vocab")
    env = Env(data_root=tmp_path, work_dir=tmp_path / "work", show_progress=False)

    def run(name: str, **pre) -> dict:
        fields = dict(steps=12, batch_size=8, lr=1e-3, checkpoints=[1.0], eval_every=12, eval_batches=1,
                      device="cuda", log_every=4, **pre)
        cfg = RunConfig(model=tiny_model_config(attention="sdpa"), tokenizer=TokenizerConfig(vocab=str(vocab)),
                        corpus=CorpusConfig(sources=SOURCES, max_seq_length=32, heldout_blocks=8),
                        pretrain=PretrainConfig(**fields), finetune={"max_seq_length": 64})
        logs = Logs()
        run_pretrain(cfg, env, tmp_path / name, logs)
        return logs.series("train/loss")

    plain, fused = run("plain"), run("fused", fused_adam=True)
    assert list(fused.values()) == pytest.approx(list(plain.values()), rel=1e-4)
    every = run("all", fused_adam=True, compile="default", sdpa_backend="efficient", grad_accumulation=2,
                precision="bf16")
    assert sorted(every) == [4, 8, 12] and all(v == v for v in every.values())


def test_pretrain_loop_sweep_on_cuda(tmp_path):
    """benchmarks/pretrain_loop.py --device cuda --quick: the batch sweep and every option run and are recorded."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import pretrain_loop

    rec = pretrain_loop.main(["--quick", "--device", "cuda", "--budget-s", "600", "--out", str(tmp_path)])
    assert (tmp_path / "pretrain_loop_cuda.md").exists()
    assert all(row.get("tokens_per_s", 0) > 0 and 0 < row["mfu"] < 1 for row in rec["rows"].values()), rec["rows"]
