"""Issue 14: the cpu scale made honest: no temperature-2 shortcut in any scale, both FLOPs conventions, fine-tuning
dropout of its own, held-out RTD metrics on temperature-1 fakes."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_model_config

from electra_bench import flops
from electra_bench.config import load_suite
from electra_bench.model.generators import MaskedLMGenerator
from electra_bench.model.heads import load_encoder
from electra_bench.schema import RunConfig
from electra_bench.sizes import generator_dims, resolve_dims
from electra_bench.suite import finetune_key, pretrain_key, upstream_of
from electra_bench.tasks import TASKS

REPO = Path(__file__).resolve().parents[1]
ROOT = Path("/nonexistent-data-root")


# --- no temperature 2 outside a labelled ablation cell ------------------------------------------------------------

def _suite_files() -> list[Path]:
    return sorted(p for p in (REPO / "suites").rglob("*.yaml") if not p.name.startswith("_"))


def test_no_scale_or_base_samples_at_temperature_2():
    scales = yaml.safe_load((REPO / "suites/paper/_scales.yaml").read_text())["scales"]
    for name, sets in scales.items():
        assert sets.get("pretrain.temperature", 1.0) == 1.0, f"scale {name} sets a sampling temperature"
    for path in _suite_files():
        suite = load_suite(path)
        for cell in suite.cells:
            t = cell.config.pretrain.temperature
            if t != 1.0:  # only a cell that says what it is
                assert "ablation" in cell.label or f"T={t:g}" in cell.label, f"{path}: cell {cell.label} at T={t}"


def test_cpu_scale_counts_compute_and_paper_scale_the_official_flops():
    scales = yaml.safe_load((REPO / "suites/paper/_scales.yaml").read_text())["scales"]
    assert scales["cpu"]["pretrain.flops_convention"] == "compute"
    assert scales["paper"].get("pretrain.flops_convention", "official") == "official"
    assert RunConfig().pretrain.flops_convention == "official"


# --- FLOPs conventions --------------------------------------------------------------------------------------------

def _tiny(vocab=8192):
    d = resolve_dims("tiny")
    return flops.EncoderDims.from_dims(d, vocab), flops.EncoderDims.from_dims(generator_dims(d, 0.25), vocab)


def test_official_convention_favours_bert_at_tiny_scale_and_compute_does_not():
    disc, gen = _tiny()
    ratio = {}
    for c in flops.CONVENTIONS:
        e = flops.train_flops_per_step(disc, gen, "electra", 128, 32, convention=c)
        m = flops.train_flops_per_step(disc, None, "mlm", 128, 32, convention=c)
        ratio[c] = e / m
    assert ratio["official"] == pytest.approx(1.54, abs=0.01)  # the audit's "~54% more BERT steps"
    assert ratio["compute"] == pytest.approx(1.09, abs=0.02)


def test_compute_convention_drops_exactly_the_dense_lookups():
    disc, _ = _tiny()
    seq = 128
    lookups = 2 * disc.embedding * (disc.vocab + seq + flops.TOKEN_TYPES)
    assert (flops.input_embedding_flops_per_token(disc, seq) - flops.input_embedding_flops_per_token(
        disc, seq, "compute")) == lookups
    with pytest.raises(ValueError, match="unknown FLOPs convention"):
        flops.train_flops_per_step(disc, None, "mlm", seq, 1, convention="dense")


def test_flops_convention_changes_planned_steps_and_key_only_when_not_official():
    from electra_bench.units import planned_steps

    off = RunConfig.model_validate({"model": {"size": "tiny"}, "pretrain": {"budget_flops": 1.45e13, "batch_size": 32}})
    comp = RunConfig.model_validate({"model": {"size": "tiny"}, "pretrain": {
        "budget_flops": 1.45e13, "batch_size": 32, "flops_convention": "compute"}})
    assert planned_steps(comp, 8192) > 2.5 * planned_steps(off, 8192)
    assert pretrain_key(off, ROOT) != pretrain_key(comp, ROOT)
    explicit = RunConfig.model_validate({**off.model_dump(mode="json"), "pretrain": {
        **off.model_dump(mode="json")["pretrain"], "flops_convention": "official"}})
    assert pretrain_key(explicit, ROOT) == pretrain_key(off, ROOT)


def test_tables_name_the_flops_convention_of_new_records():
    from electra_bench.claims import TableSpec
    from electra_bench.tables import _notes

    spec = TableSpec("t", None, None, None, (), "sd", 1, {}, "paper")
    rec = {"suite": "s", "code_version": "1", "unit": "pretrain"}
    assert not any("FLOPs convention" in n for n in _notes([rec], [], spec, []))
    notes = _notes([{**rec, "flops_convention": "compute"}], [], spec, [])
    assert any("compute-faithful" in n for n in notes)


# --- fine-tuning dropout ------------------------------------------------------------------------------------------

def test_finetune_dropout_is_its_own_setting():
    from transformers import ElectraConfig

    cfg = ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    enc = load_encoder(None, cfg, dropout=0.1, attention_dropout=0.2)
    assert (enc.config.hidden_dropout_prob, enc.config.attention_probs_dropout_prob) == (0.1, 0.2)
    assert cfg.hidden_dropout_prob == 0.0  # the caller's config is not changed


def test_finetune_dropout_key_unchanged_where_it_equals_the_pretraining_dropout():
    spec = TASKS.get("sst2")

    def key(data):
        run = RunConfig.model_validate(data)
        return finetune_key(run, spec, 0, upstream_of(run, ROOT))

    # default model dropout 0.1 = default fine-tuning dropout 0.1: what the code did before the field existed
    plain = RunConfig().model_dump(mode="json")
    for k in ("dropout", "attention_dropout"):
        plain["finetune"].pop(k)
    assert key({}) == key(plain)
    # pre-training dropout 0 (cpu scale): fine-tuning at 0.1 is a real change, at 0 it is what ran before
    zero = {"model": {"dropout": 0.0, "attention_dropout": 0.0}}
    before = key({**zero, "finetune": {"dropout": 0.0, "attention_dropout": 0.0}})
    assert key(zero) != before


# --- held-out RTD metrics on T=1 fakes -----------------------------------------------------------------------------

def test_heldout_eval_samples_at_temperature_1_and_restores_the_training_one(monkeypatch):
    from electra_bench.build import build_objective
    from electra_bench.corpus import Blocks
    from electra_bench.model.algorithms import Algorithm
    from electra_bench.model.objectives import Vocab
    from electra_bench.pretrain import PretrainSettings, evaluate

    run = RunConfig.model_validate({"model": tiny_model_config().model_dump(), "pretrain": {"temperature": 2.0},
                                   "corpus": {"max_seq_length": 64}, "finetune": {"max_seq_length": 64}})
    vocab = Vocab(size=120, mask_id=4, special_ids=(0, 1, 2, 3, 4))
    objective = build_objective(run.model, run.pretrain, vocab)
    gens = [m for m in objective.modules() if isinstance(m, MaskedLMGenerator)]
    assert gens and all(g.temperature == 2.0 for g in gens)
    seen = []
    real = MaskedLMGenerator.forward

    def spy(self, *a, **k):
        seen.append(self.temperature)
        return real(self, *a, **k)

    monkeypatch.setattr(MaskedLMGenerator, "forward", spy)
    ids = torch.randint(5, 120, (8, 16))
    ids[:, 0], ids[:, -1] = 2, 3
    held = Blocks(ids.numpy(), torch.zeros_like(ids).numpy())
    algorithm = Algorithm(objective)
    s = PretrainSettings(steps=1, batch_size=4, lr=1e-3, warmup_steps=0, weight_decay=0.0, adam_eps=1e-6,
                         betas=(0.9, 0.999), bias_correction=True, grad_clip=1.0, eval_every=1, eval_batches=2,
                         checkpoints=(1.0,), seed=0, precision="fp32", device="cpu", log_every=1)
    evaluate(algorithm, held, s)
    assert seen and set(seen) == {1.0}
    assert all(g.temperature == 2.0 for g in gens)


def test_annealed_temperature_goes_linearly_from_start_to_end_and_evals_stay_at_1(monkeypatch, tmp_path):
    """pretrain.temperature_end (an issue-14 lever): the training fakes are sampled at T = 2 -> 1 linearly over the
    steps, for joint and two-stage training; the held-out evals still sample at T=1; MLM and unigram generators
    refuse it."""
    from pydantic import ValidationError

    from electra_bench.build import build_objective
    from electra_bench.corpus import Blocks
    from electra_bench.model.algorithms import ALGORITHMS
    from electra_bench.model.objectives import Vocab
    from electra_bench.pretrain import PretrainSettings, pretrain

    vocab = Vocab(size=120, mask_id=4, special_ids=(0, 1, 2, 3, 4))
    ids = torch.randint(5, 120, (16, 16), generator=torch.Generator().manual_seed(0))
    ids[:, 0], ids[:, -1] = 2, 3
    blocks = Blocks(ids.numpy(), torch.zeros_like(ids).numpy())
    seen: list[tuple[bool, float]] = []
    real = MaskedLMGenerator.forward

    def spy(self, *a, **k):
        seen.append((self.training, self.temperature))
        return real(self, *a, **k)

    monkeypatch.setattr(MaskedLMGenerator, "forward", spy)
    for algorithm, gen_size in (("joint", 0.25), ("two_stage", 1.0)):
        pre = {"temperature": 2.0, "temperature_end": 1.0, "algorithm": algorithm, "generator_size": gen_size}
        run = RunConfig.model_validate({"model": tiny_model_config().model_dump(), "pretrain": pre,
                                       "corpus": {"max_seq_length": 64}, "finetune": {"max_seq_length": 64}})
        torch.manual_seed(0)
        extra = {"switch_fraction": 0.4} if algorithm == "two_stage" else {}
        algo = ALGORITHMS[algorithm](build_objective(run.model, run.pretrain, vocab), temperature_end=1.0, **extra)
        s = PretrainSettings(steps=5, batch_size=4, lr=1e-3, warmup_steps=0, weight_decay=0.0, adam_eps=1e-6,
                             betas=(0.9, 0.999), bias_correction=True, grad_clip=1.0, eval_every=100,
                             eval_batches=1, checkpoints=(), seed=0, precision="fp32", device="cpu", log_every=1)
        seen.clear()
        pretrain(algo, blocks, blocks, s, tmp_path / algorithm, tokenizer=None, show_progress=False)
        train = [t for training, t in seen if training]
        assert train == pytest.approx([2.0, 1.75, 1.5, 1.25, 1.0]), algorithm
        assert {t for training, t in seen if not training} == {1.0}  # the final held-out eval: the paper's fakes
        # the temperature is a function of the step alone: a resumed run continues the schedule where it stopped
        algo2 = ALGORITHMS[algorithm](build_objective(run.model, run.pretrain, vocab), temperature_end=1.0, **extra)
        algo2.on_step(3, 5)
        assert algo2.objective.generator.temperature == pytest.approx(1.25)
    for bad in ({"objective": "mlm"}, {"generator_size": "unigram"}):
        with pytest.raises(ValidationError, match="temperature_end"):
            RunConfig.model_validate({"pretrain": {"temperature_end": 1.0, **bad}})
    # unset, it leaves every run key as it was (finished units keep their keys)
    plain = RunConfig.model_validate({"pretrain": {"temperature": 2.0}})
    annealed = RunConfig.model_validate({"pretrain": {"temperature": 2.0, "temperature_end": 1.0}})
    assert pretrain_key(plain, ROOT) != pretrain_key(annealed, ROOT)
    unset = RunConfig.model_validate({"pretrain": {"temperature": 2.0, "temperature_end": None}})
    assert pretrain_key(plain, ROOT) == pretrain_key(unset, ROOT)


# --- the shortcut baseline and the collapse signal -----------------------------------------------------------------

def test_mean_token_cosine_by_hand():
    from electra_bench.pretrain import mean_token_cosine

    same = torch.ones(1, 4, 3)  # every token the same vector: collapsed
    orth = torch.eye(3)[None]  # three orthogonal states
    mask = torch.tensor([[1, 1, 1, 0]])
    assert mean_token_cosine(same, mask).item() == pytest.approx(1.0)
    assert mean_token_cosine(orth, torch.ones(1, 3)).item() == pytest.approx(0.0, abs=1e-6)
    mixed = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])  # pad row ignored
    assert mean_token_cosine(mixed, mask).item() == pytest.approx(1 / 3)


def test_lookup_auc_by_hand():
    from electra_bench.pretrain import lookup_auc

    # token 7 always replaced, token 3 never: the lookup separates perfectly
    fit_t, fit_y = torch.tensor([7, 7, 3, 3, 3]), torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    assert lookup_auc(fit_t, fit_y, torch.tensor([7, 3, 3]), torch.tensor([1.0, 0.0, 0.0])) == pytest.approx(1.0)
    # a token id says nothing: every id equally often replaced -> chance
    fit_t, fit_y = torch.tensor([1, 1, 2, 2]), torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert lookup_auc(fit_t, fit_y, torch.tensor([1, 2, 1, 2]), torch.tensor([1.0, 0.0, 0.0, 1.0])) == 0.5
    assert lookup_auc(fit_t, fit_y, torch.tensor([1, 2]), torch.tensor([0.0, 0.0])) is None


# --- two-stage: G truly frozen in stage two; the optimiser docstring's direction ---------------------------------

@pytest.mark.parametrize("tying", ["embeddings", "all"])
def test_two_stage_generator_is_frozen_in_stage_two(tying):
    from electra_bench.build import build_objective
    from electra_bench.model.algorithms import TwoStage
    from electra_bench.model.objectives import Batch, Vocab
    from electra_bench.optim import make_optimizer

    run = RunConfig.model_validate({
        "model": tiny_model_config().model_dump(), "corpus": {"max_seq_length": 64}, "finetune": {"max_seq_length": 64},
        "pretrain": {"algorithm": "two_stage", "generator_size": 1.0, "tying": tying}})
    torch.manual_seed(0)
    objective = build_objective(run.model, run.pretrain, Vocab(size=120, mask_id=4, special_ids=(0, 1, 2, 3, 4)))
    algorithm = TwoStage(objective, 0.5)
    optimizer = make_optimizer(objective, 1e-2, 0.01, 1e-6, (0.9, 0.999), True)
    algorithm.on_step(5, 10)
    assert algorithm.stage == 2
    gen = objective.generator.model
    assert gen.generator_lm_head.weight is gen.electra.embeddings.word_embeddings.weight  # G's own tie kept
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    d_before = objective.discriminator.electra.embeddings.word_embeddings.weight.clone()
    ids = torch.randint(5, 120, (4, 16))
    ids[:, 0], ids[:, -1] = 2, 3
    batch = Batch(ids, torch.ones_like(ids), torch.zeros_like(ids))
    for _ in range(3):
        optimizer.zero_grad()
        algorithm.loss(batch, None).loss.backward()
        optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in gen.state_dict().items())
    assert not torch.equal(d_before, objective.discriminator.electra.embeddings.word_embeddings.weight)  # D trains


def test_no_bias_correction_makes_early_updates_larger():
    from electra_bench.optim import make_optimizer

    steps = {}
    for corrected in (True, False):
        p = torch.nn.Parameter(torch.zeros(3))
        opt = make_optimizer(torch.nn.ParameterList([p]), 1e-3, 0.0, 1e-12, (0.9, 0.999), corrected)
        p.grad = torch.ones(3)
        opt.step()
        steps[corrected] = p.detach().abs().max().item()
    # (1 - beta1) / (1 - beta2)^0.5 = 0.1 / 0.0316 = 3.16 at step 1, as optim.py says
    assert steps[False] / steps[True] == pytest.approx(0.1 / 0.001 ** 0.5, rel=1e-3)
