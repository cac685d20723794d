"""Pre-training end to end on a tiny fixture corpus: block packing, checkpoints usable by `transformers`, RTD
metrics, resume equivalence after a kill, and a non-finite loss. CPU only; each run is 12 steps of a 2-layer model."""
import gzip
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_model_config

from electra_bench import corpus
from electra_bench.model.objectives import PretrainOutput
from electra_bench.pretrain import NonFiniteLoss, RTDMeter, batch_rows, checkpoint_dir
from electra_bench.schema import CorpusConfig, FinetuneConfig, PretrainConfig, RunConfig, TokenizerConfig
from electra_bench.tasks import DataError
from electra_bench.tokenizer import load_tokenizer, train_wordpiece
from electra_bench.units import Env, run_pretrain

CORPUS = Path(__file__).parent / "fixtures" / "corpus"
SOURCES = [str(CORPUS / "*.txt"), str(CORPUS / "*.txt.gz")]  # absolute patterns: the data root is not used
RTD_METRICS = ("gen_mlm_acc", "disc_acc", "disc_precision", "disc_recall", "replaced_frac")


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory) -> Path:
    return vocab_of_fixture(tmp_path_factory.mktemp("vocab"))


def vocab_of_fixture(out_dir: Path) -> Path:
    """A 300-piece WordPiece vocab trained on the fixture corpus (also used by test_cuda.py)."""
    files = [*sorted(CORPUS.glob("*.txt")), *sorted(CORPUS.glob("*.txt.gz"))]
    lines = [line for doc in corpus.iter_documents(files) for line in doc]
    return train_wordpiece(lines, 300, out_dir)


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    return load_tokenizer(vocab_file)


def run_config(vocab_file: Path, model=None, **pretrain) -> RunConfig:
    fields = dict(steps=12, batch_size=4, lr=1e-3, warmup_fraction=0.1, checkpoints=[0.5, 1.0], eval_every=6,
                  eval_batches=2, seed=0, device="cpu", precision="fp32")
    return RunConfig(model=model or tiny_model_config(), tokenizer=TokenizerConfig(vocab=str(vocab_file)),
                     corpus=CorpusConfig(sources=SOURCES, max_seq_length=32, heldout_blocks=8),
                     finetune=FinetuneConfig(max_seq_length=32),  # within the tiny model's 64 positions
                     pretrain=PretrainConfig(**{**fields, **pretrain}))


class Killed(BaseException):
    """A simulated kill: not an Exception, so nothing on the way catches it (and it is not a KeyboardInterrupt)."""


class Logs:
    """The `log` callback: keeps every call; optionally raises at a step (a simulated kill)."""

    def __init__(self, kill_at: int | None = None):
        self.calls, self.kill_at = [], kill_at

    def __call__(self, metrics, step):
        if step == self.kill_at:
            raise Killed(f"killed at step {step}")
        self.calls.append((step, dict(metrics)))

    def series(self, key):
        return {step: m[key] for step, m in self.calls if key in m}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(data_root=tmp_path_factory.mktemp("data"), work_dir=tmp_path_factory.mktemp("work"),
               show_progress=False)


@pytest.fixture(scope="module")
def run_a(vocab_file, env, tmp_path_factory):
    """12 uninterrupted steps."""
    out = tmp_path_factory.mktemp("run-a")
    logs = Logs()
    result = run_pretrain(run_config(vocab_file), env, out, logs)
    return out, result, logs


# --- corpus packing ------------------------------------------------------------------------------------------------

def test_tokenizer_was_trained_on_the_fixture(tokenizer):
    assert 100 < len(tokenizer) <= 300
    ids = tokenizer("the lighthouse", add_special_tokens=False)["input_ids"]
    assert tokenizer.unk_token_id not in ids
    assert [tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.mask_token_id] == [0, 1, 2, 3, 4]


def test_gzip_sources_are_read():
    docs = list(corpus.iter_documents([CORPUS / "stories-c.txt.gz"]))
    text = gzip.decompress((CORPUS / "stories-c.txt.gz").read_bytes()).decode()
    assert docs and len(docs) == text.strip().count("\n\n") + 1
    assert docs[0][0] == text.splitlines()[0]


@pytest.mark.parametrize("max_len,single_prob,short_prob", [(32, 0.1, 0.05), (16, 0.0, 0.0), (32, 1.0, 0.5)])
def test_blocks_are_well_formed(tokenizer, max_len, single_prob, short_prob):
    files = corpus.source_files(Path("/unused"), SOURCES)
    assert [len(f) for f in files] == [2, 1]
    blocks = corpus.build_blocks(files, tokenizer, max_len, None, seed=0, single_prob=single_prob,
                                 short_prob=short_prob)
    assert len(blocks) > 20 and blocks.input_ids.shape == blocks.token_type_ids.shape == (len(blocks), max_len)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    n_two = 0
    for ids, types in zip(blocks.input_ids.tolist(), blocks.token_type_ids.tolist()):
        n = sum(1 for t in ids if t != 0)
        assert ids[n:] == [0] * (max_len - n) and 0 not in ids[:n]  # padding only at the end
        assert ids[0] == cls and ids[n - 1] == sep and n >= 3
        seps = [i for i, t in enumerate(ids[:n]) if t == sep]
        assert len(seps) in (1, 2)
        assert types[n:] == [0] * (max_len - n)
        if len(seps) == 1:
            assert types[:n] == [0] * n
        else:  # [CLS] A [SEP] B [SEP]: segment ids 0 up to the first [SEP], then 1
            n_two += 1
            assert types[:n] == [0] * (seps[0] + 1) + [1] * (n - seps[0] - 1)
            assert seps[1] == n - 1 and seps[0] >= 2
    if single_prob == 1.0:
        assert n_two == 0
    if single_prob == 0.0:
        assert n_two > 0


def test_blocks_keep_the_text(tokenizer):
    """With no short targets, packing loses nothing that fits: every token of a short document is in a block."""
    files = [[CORPUS / "stories-a.txt"]]
    blocks = corpus.build_blocks(files, tokenizer, 128, None, seed=0, single_prob=1.0, short_prob=0.0)
    first_doc = next(corpus.iter_documents(files[0]))
    words = tokenizer(" ".join(first_doc), add_special_tokens=False)["input_ids"]
    packed = [t for row in blocks.input_ids.tolist() for t in row if t > 4]
    assert len(words) < 120 and set(words) <= set(packed)
    assert blocks.input_ids.max() < len(tokenizer)


def test_gz_that_is_not_gzip_is_a_data_error(tmp_path, tokenizer):
    bad = tmp_path / "plain.txt.gz"
    bad.write_text("This is plain text.\nNot compressed at all.\n")
    with pytest.raises(DataError, match="plain.txt.gz"):
        corpus.build_blocks([[bad]], tokenizer, 32, None)


def test_source_pattern_that_matches_nothing(tmp_path):
    with pytest.raises(DataError, match="matches no file"):
        corpus.source_files(tmp_path, ["corpus/none/*.txt.gz"])


# --- training helpers ----------------------------------------------------------------------------------------------

def test_rtd_meter_by_hand():
    meter = RTDMeter()
    stats = {"disc_tp": 3.0, "disc_fp": 1.0, "disc_fn": 2.0, "disc_tn": 4.0, "n_selected": 4.0, "gen_correct": 1.0,
             "sampled_correct": 2.0, "n_scored": 10.0, "n_replaced": 5.0}
    out = PretrainOutput(torch.tensor(2.0), torch.tensor(1.0), torch.tensor(0.5),
                         {k: torch.tensor(v) for k, v in stats.items()},
                         disc_probs=torch.tensor([0.9, 0.8, 0.3, 0.1]), disc_labels=torch.tensor([1.0, 0, 1, 0]))
    meter.add(out)
    m = meter.metrics()
    assert m["disc_acc"] == pytest.approx(0.7)  # (3 + 4) / 10
    assert m["disc_precision"] == pytest.approx(0.75)  # 3 / (3 + 1)
    assert m["disc_recall"] == pytest.approx(0.6)  # 3 / (3 + 2)
    assert m["gen_mlm_acc"] == pytest.approx(0.25) and m["sampled_acc"] == pytest.approx(0.5)
    assert m["replaced_frac"] == pytest.approx(0.5)
    assert m["disc_auc"] == pytest.approx(0.75)  # positive > negative in 3 of 4 pairs
    assert (m["loss"], m["gen_loss"], m["disc_loss"]) == (2.0, 1.0, 0.5)


def test_rtd_meter_window_where_the_discriminator_joins_mid_window():
    """Two-stage training: stage one's steps report generator counts only, stage two's add the discriminator's. A
    log window spanning the switch (it failed the two-stage lever row at its switch step) sums each count over the
    steps that had it."""
    meter = RTDMeter()
    gen = {"n_selected": 4.0, "sampled_correct": 1.0, "gen_correct": 2.0}
    disc = {"disc_tp": 3.0, "disc_fp": 1.0, "disc_fn": 2.0, "disc_tn": 4.0, "n_scored": 10.0, "n_replaced": 5.0}
    as_t = lambda d: {k: torch.tensor(v) for k, v in d.items()}  # noqa: E731
    meter.add(PretrainOutput(torch.tensor(2.0), torch.tensor(2.0), torch.tensor(0.0), as_t(gen)))
    meter.add(PretrainOutput(torch.tensor(4.0), torch.tensor(1.0), torch.tensor(0.5), as_t({**gen, **disc})))
    meter.add(PretrainOutput(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(0.0), as_t(gen)))  # and back
    m = meter.metrics()
    assert m["gen_mlm_acc"] == pytest.approx(0.5) and m["sampled_acc"] == pytest.approx(0.25)  # 6 / 12, 3 / 12
    assert m["disc_recall"] == pytest.approx(0.6) and m["disc_acc"] == pytest.approx(0.7)  # stage two's step only
    assert m["loss"] == pytest.approx(7 / 3)


def test_rtd_meter_has_no_auc_with_one_class():
    meter = RTDMeter()
    meter.add(PretrainOutput(torch.tensor(1.0), torch.tensor(1.0), torch.tensor(0.0), {},
                             disc_probs=torch.tensor([0.2, 0.7]), disc_labels=torch.tensor([0.0, 0.0])))
    assert "disc_auc" not in meter.metrics()


def test_batch_rows_cover_each_epoch_once_and_follow_the_step():
    n, bs = 23, 4  # 5 batches per epoch; 3 rows are left out of each epoch
    epoch = [batch_rows(n, bs, step, seed=3) for step in range(5)]
    rows = np.concatenate(epoch)
    assert len(rows) == 20 and len(set(rows.tolist())) == 20
    assert np.array_equal(batch_rows(n, bs, 2, seed=3), epoch[2])  # a function of the step alone
    assert not np.array_equal(batch_rows(n, bs, 5, seed=3), epoch[0])  # a new permutation next epoch


# --- end to end ---------------------------------------------------------------------------------------------------

def test_checkpoints_are_loadable_by_transformers(run_a, tokenizer):
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    out, result, _ = run_a
    assert result["steps"] == 12 and result["params"] > 0 and result["train_flops"] > 0
    for fraction, name in [(0.5, "checkpoint-50pct"), (1.0, "checkpoint-100pct")]:
        assert checkpoint_dir(out, fraction) == out / name and (out / name).is_dir()
    ckpt = out / "checkpoint-100pct"
    model = AutoModelForTokenClassification.from_pretrained(ckpt, num_labels=3)
    tok = AutoTokenizer.from_pretrained(ckpt)
    assert model.config.hidden_size == 32 and model.config.num_hidden_layers == 2  # D, not the 8-wide G
    state = torch.load(out / "state.pt", weights_only=False)
    assert state["step"] == 12
    disc = {k[len("discriminator."):]: v for k, v in state["model"].items() if k.startswith("discriminator.electra.")}
    loaded = model.state_dict()
    assert disc and all(torch.equal(loaded[k], v) for k, v in disc.items())  # the trained D's encoder
    half = AutoModelForTokenClassification.from_pretrained(out / "checkpoint-50pct", num_labels=3).state_dict()
    assert any(not torch.equal(half[k], v) for k, v in disc.items())  # 6 more steps changed it
    text = "the old captain found the lighthouse"
    assert tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    with torch.no_grad():
        logits = model(**tok(text, return_tensors="pt")).logits
    assert logits.shape[-1] == 3 and torch.isfinite(logits).all()


def test_checkpoints_name_their_limits_and_labels(run_a):
    """Issue 18.7: a saved tokenizer with model_max_length 1e30 lets a pipeline crash on long input, and the
    discriminator loaded with placeholder labels LABEL_0/1."""
    from transformers import AutoConfig, AutoTokenizer

    out, _, _ = run_a
    ckpt = out / "checkpoint-100pct"
    cfg = AutoConfig.from_pretrained(ckpt)
    assert AutoTokenizer.from_pretrained(ckpt).model_max_length == cfg.max_position_embeddings < 10_000
    assert cfg.id2label == {0: "original", 1: "replaced"} and cfg.label2id == {"original": 0, "replaced": 1}


def test_final_metrics(run_a):
    _, result, logs = run_a
    m = result["metrics"]
    for key in (*RTD_METRICS, "loss", "gen_loss", "disc_loss"):
        assert key in m and np.isfinite(m[key]), key
    for key in RTD_METRICS:
        assert 0.0 <= m[key] <= 1.0, key
    assert 0 < m["replaced_frac"] < 1  # both classes present, so the AUC exists
    assert 0.0 <= m["disc_auc"] <= 1.0
    assert 0.0 <= m["lookup_auc"] <= 1.0 and -1.0 <= m["token_cosine"] <= 1.0  # issue 14 baselines
    assert sorted(logs.series("eval/token_cosine")) == [6, 12]
    train_steps = sorted(logs.series("train/loss"))
    assert train_steps == list(range(1, 13))  # log_every = 1 at 12 steps
    assert sorted(logs.series("eval/disc_auc")) == [6, 12]
    assert logs.series("eval/disc_acc")[12] == pytest.approx(m["disc_acc"])  # the last eval is the result
    # the run's evaluation history, in the result (-> the record's `evals`): every eval, tokens = step x batch
    assert [e["step"] for e in result["evals"]] == [6, 12]
    assert [e["tokens"] for e in result["evals"]] == [6 * 4 * 32, 12 * 4 * 32]
    assert result["evals"][0]["disc_auc"] == pytest.approx(logs.series("eval/disc_auc")[6])
    assert {k: v for k, v in result["evals"][-1].items() if k not in ("step", "tokens")} == m


def test_resume_after_kill_matches_uninterrupted_run(run_a, vocab_file, env, tmp_path):
    out_a, result_a, logs_a = run_a
    out_b = tmp_path / "run-b"
    with pytest.raises(Killed):  # killed in step 7, after step 6's state (checkpoint 50%) was saved
        run_pretrain(run_config(vocab_file), env, out_b, Logs(kill_at=7))
    assert torch.load(out_b / "state.pt", weights_only=False)["step"] == 6
    assert (out_b / "checkpoint-50pct").is_dir() and not (out_b / "checkpoint-100pct").exists()

    logs_b = Logs()
    result_b = run_pretrain(run_config(vocab_file), env, out_b, logs_b)
    assert sorted(logs_b.series("train/loss")) == list(range(7, 13))  # resumed, not restarted
    loss_a, loss_b = logs_a.series("train/loss"), logs_b.series("train/loss")
    assert [loss_b[s] for s in range(7, 13)] == pytest.approx([loss_a[s] for s in range(7, 13)], rel=1e-5)
    assert result_b["metrics"] == pytest.approx(result_a["metrics"], rel=1e-5, abs=1e-6)
    # the evaluation at step 6 was made by the killed run: the resumed one still reports it (kept in the state)
    assert [e["step"] for e in result_b["evals"]] == [6, 12]
    assert result_b["evals"][0]["disc_auc"] == pytest.approx(result_a["evals"][0]["disc_auc"], rel=1e-5)
    state_a = torch.load(out_a / "state.pt", weights_only=False)["model"]
    state_b = torch.load(out_b / "state.pt", weights_only=False)["model"]
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        torch.testing.assert_close(state_b[k], state_a[k], rtol=1e-5, atol=1e-6)


def test_resume_from_a_state_without_evals_reports_no_history(vocab_file, env, tmp_path):
    """A state saved before states kept the evaluations: the resumed run's history would hold only the evaluations
    after the resume, so it reports none (the record then has no `evals`) rather than a partial one."""
    out = tmp_path / "old"
    with pytest.raises(Killed):
        run_pretrain(run_config(vocab_file), env, out, Logs(kill_at=7))
    state = torch.load(out / "state.pt", weights_only=False)
    del state["evals"]
    torch.save(state, out / "state.pt")
    result = run_pretrain(run_config(vocab_file), env, out, Logs())
    assert result["evals"] == [] and 0.0 <= result["metrics"]["disc_auc"] <= 1.0


def test_resume_with_dropout_matches_uninterrupted_run(vocab_file, env, tmp_path):
    model = tiny_model_config(dropout=0.1, attention_dropout=0.1)
    logs_a = Logs()
    run_pretrain(run_config(vocab_file, model), env, tmp_path / "a", logs_a)
    with pytest.raises(Killed):
        run_pretrain(run_config(vocab_file, model), env, tmp_path / "b", Logs(kill_at=7))
    logs_b = Logs()
    run_pretrain(run_config(vocab_file, model), env, tmp_path / "b", logs_b)
    loss_a, loss_b = logs_a.series("train/loss"), logs_b.series("train/loss")
    assert [loss_b[s] for s in range(7, 13)] == pytest.approx([loss_a[s] for s in range(7, 13)], rel=1e-5)


class Captured(Exception):
    pass


def test_unigram_counts_are_corpus_tokens_only(vocab_file, env, tmp_path, tokenizer, monkeypatch):
    import electra_bench.units as units

    seen = {}

    def capture(model, pre, vocab, unigram_counts=None):
        seen["counts"], seen["vocab"] = unigram_counts, vocab
        raise Captured

    monkeypatch.setattr(units, "build_objective", capture)
    with pytest.raises(Captured):
        run_pretrain(run_config(vocab_file, generator_size="unigram"), env, tmp_path / "unigram", Logs())
    counts, vocab = seen["counts"], seen["vocab"]
    assert counts is not None and len(counts) == vocab.size
    assert counts[tokenizer.convert_tokens_to_ids("the")] > 0
    assert [int(counts[i]) for i in vocab.special_ids] == [0] * len(vocab.special_ids)


def test_non_finite_loss_raises(vocab_file, env, tmp_path):
    with pytest.raises(NonFiniteLoss, match="at steps 1-4"):  # found at the first sync point, named by range
        run_pretrain(run_config(vocab_file, lr=1e30, grad_clip=1e30, log_every=4, checkpoints=[1.0]), env,
                     tmp_path / "nan", Logs())
    assert not (tmp_path / "nan" / "state.pt").exists()  # nothing non-finite was saved


# Every way a tensor's value reaches Python. On CUDA each one waits for the device.
HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__index__", "__bool__")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_no_host_reads_between_logging_steps(device, vocab_file, env, tmp_path, monkeypatch):
    """Issue 15: inside the loop, tensors are read back only at the sync points (log steps 4, 8, 12 here)."""
    from electra_bench.model.algorithms import Algorithm

    current, reads = [None], {}  # the step being run (0-based) -> callers that read a tensor during it

    def counting(name: str):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, **k):
            caller = sys._getframe(1).f_code.co_filename
            # torch.optim reads AdamW's step counter, which lives on the host on CUDA too (no device wait)
            if current[0] is not None and f"torch{os.sep}optim" not in caller:
                reads.setdefault(current[0], []).append(f"{name} from {caller}")
            return original(self, *a, **k)
        return counted

    for name in HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    on_step = Algorithm.on_step
    monkeypatch.setattr(Algorithm, "on_step", lambda self, step, total: (current.__setitem__(0, step),
                                                                          on_step(self, step, total))[1])
    logs = Logs()
    run_pretrain(run_config(vocab_file, log_every=4, eval_every=12, checkpoints=[1.0], device=device), env,
                 tmp_path / "r", logs)
    assert sorted(logs.series("train/loss")) == [4, 8, 12]
    between = {step + 1: callers for step, callers in reads.items() if (step + 1) % 4}
    assert not between, f"host reads inside steps: {between}"
    assert {step + 1 for step in reads} == {4, 8, 12}  # the sync points do read (the counting works)


def test_fused_adam_is_speed_only(run_a, vocab_file, env, tmp_path):
    """torch's fused AdamW (a GPU option, also on CPU) gives the losses of the default one: not in the run key."""
    _, _, logs_a = run_a
    logs = Logs()
    run_pretrain(run_config(vocab_file, fused_adam=True), env, tmp_path / "fused", logs)
    loss_a, loss_f = logs_a.series("train/loss"), logs.series("train/loss")
    assert sorted(loss_f) == sorted(loss_a)
    assert [loss_f[s] for s in sorted(loss_f)] == pytest.approx([loss_a[s] for s in sorted(loss_a)], rel=1e-5)


def test_gradient_accumulation_trains_on_micro_batches(run_a, vocab_file, env, tmp_path, monkeypatch):
    from electra_bench.model.algorithms import Algorithm

    sizes, loss = [], Algorithm.loss
    monkeypatch.setattr(Algorithm, "loss", lambda self, batch, rng: (sizes.append(len(batch.input_ids)),
                                                                     loss(self, batch, rng))[1])
    logs = Logs()
    run_pretrain(run_config(vocab_file, grad_accumulation=2, eval_every=100), env, tmp_path / "accum", logs)
    assert sizes == [2] * 24  # 12 steps of batch 4, each two micro-batches of 2
    losses = logs.series("train/loss")
    assert sorted(losses) == list(range(1, 13)) and all(np.isfinite(list(losses.values())))
    assert losses != run_a[2].series("train/loss")  # other masks and per-micro-batch means: another run (keyed)


# --- fine-tuning from any save_pretrained checkpoint; corpus mixtures; sampling temperature -------------------------

def test_finetune_from_a_checkpoint_directory(run_a, tmp_path):
    """`finetune.init` may name any save_pretrained folder (here: this run's discriminator)."""
    from test_suite_e2e import make_data_root

    from electra_bench.tasks import TASKS
    from electra_bench.units import run_finetune

    out, _, _ = run_a
    root = make_data_root(tmp_path / "data")
    run = run_config(Path(root) / "vocab" / "vocab.txt").model_copy(
        update={"finetune": run_config(Path("x")).finetune.model_copy(update={"epochs": 1.0, "batch_size": 8})})
    env = Env(data_root=root, work_dir=tmp_path / "work", show_progress=False)
    res = run_finetune(run, TASKS.get("sst2"), 0, env, str(out / "checkpoint-100pct"))
    assert res["n_train"] == 80 and res["params"] > 0 and 0 <= res["headline"] <= 100


def test_mixture_weights_set_each_sources_share(tokenizer):
    files = [[p] for p in sorted(CORPUS.glob("*.txt"))]
    plain = corpus.build_blocks(files, tokenizer, 32, None, seed=0)
    mixed = corpus.build_blocks(files, tokenizer, 32, None, seed=0, weights=[3.0, 1.0])
    assert abs(len(mixed) - len(plain)) <= 2  # resampled to the same total
    first = corpus.build_blocks(files[:1], tokenizer, 32, None, seed=0)
    firsts = {tuple(r) for r in first.input_ids}
    share = np.mean([tuple(r) in firsts for r in mixed.input_ids])
    assert 0.65 < share < 0.85  # 3:1 -> 75% of blocks from the first source


def test_temperature_flattens_generator_samples():
    from electra_bench.model.generators import sample_from_logits

    logits = torch.tensor([[4.0, 0.0, 0.0, 0.0]]).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    cold = (sample_from_logits(logits, 1.0, g) == 0).float().mean().item()
    hot = (sample_from_logits(logits, 4.0, g) == 0).float().mean().item()
    assert cold == pytest.approx(np.exp(4) / (np.exp(4) + 3), abs=0.03)  # softmax probability of token 0
    assert hot == pytest.approx(np.e / (np.e + 3), abs=0.03)  # logits / 4


def test_budget_flops_gives_equal_compute_steps():
    """`pretrain.budget_flops` sets the steps so every cell spends the same training FLOPs (Tables 1 and 5)."""
    from electra_bench.units import flops_per_step, planned_steps

    electra = RunConfig(pretrain=PretrainConfig(objective="electra"))
    per_step = flops_per_step(electra, 30522)
    budget = 1000 * per_step
    electra_b = RunConfig(pretrain=PretrainConfig(objective="electra", budget_flops=budget))
    bert_b = RunConfig(pretrain=PretrainConfig(objective="mlm", budget_flops=budget))
    assert planned_steps(electra_b, 30522) == 1000
    bert_steps = planned_steps(bert_b, 30522)
    assert bert_steps * flops_per_step(bert_b, 30522) == pytest.approx(budget, rel=1e-3)
    assert 1.25 < bert_steps / 1000 < 1.40  # a 1/4-width generator costs ~1.32x a BERT step (reference §11)
    assert planned_steps(RunConfig(pretrain=PretrainConfig(steps=77)), 30522) == 77  # no budget: the steps field


# --- held-out metrics of issue 14: T=1 fakes, the context-free baseline, token cosine --------------------------------

def _tiny_electra(vocab_file, tokenizer, env, **pretrain):
    from electra_bench.build import build_objective
    from electra_bench.model.algorithms import Algorithm
    from electra_bench.units import get_blocks, settings_for, vocab_of

    run = run_config(vocab_file, **pretrain)
    train, held = get_blocks(run, tokenizer, "fixture", env)
    torch.manual_seed(0)
    obj = build_objective(run.model, run.pretrain, vocab_of(tokenizer))
    return Algorithm(obj), train, held, settings_for(run, 12, "cpu")


def test_pretrain_result_counts_flops_under_both_conventions(run_a):
    result = run_a[1]
    assert result["train_flops_compute"] < result["train_flops_official"] == result["train_flops"]  # default official
    assert result["train_tokens"] == 12 * 4 * 32  # steps x batch x sequence length


def test_heldout_metrics_of_a_t2_model_are_those_of_its_weights_at_t1(vocab_file, tokenizer, env):
    """A model trained at T=2 is scored on the paper's T=1 fakes: the same held-out numbers as the same weights
    with a T=1 generator (and its temperature is back at 2 after)."""
    from electra_bench.pretrain import evaluate

    hot, train, held, s = _tiny_electra(vocab_file, tokenizer, env, temperature=2.0)
    cold, *_ = _tiny_electra(vocab_file, tokenizer, env, temperature=1.0)
    cold.objective.load_state_dict(hot.objective.state_dict())
    m_hot, m_cold = evaluate(hot, held, s, train), evaluate(cold, held, s, train)
    assert hot.objective.generator.temperature == 2.0
    for key in ("disc_auc", "disc_recall", "replaced_frac", "lookup_auc", "token_cosine"):
        assert m_hot[key] == pytest.approx(m_cold[key]), key


def test_lookup_auc_finds_a_token_identity_shortcut_end_to_end(vocab_file, tokenizer, env):
    """A generator whose fakes are always one token: through `evaluate`, the context-free lookup separates them
    (AUC ~1) while an untrained discriminator does not."""
    from electra_bench.model.generators import Proposal
    from electra_bench.pretrain import evaluate

    algo, train, held, s = _tiny_electra(vocab_file, tokenizer, env)
    fake = len(tokenizer) - 1

    class OneToken(torch.nn.Module):
        def forward(self, masked, mask, types, sel, rng=None):
            samples = torch.full_like(sel.positions, fake)
            zero = masked.new_zeros((), dtype=torch.float32)
            return Proposal(samples, zero, None, None, None)

    algo.objective.generator = OneToken()
    m = evaluate(algo, held, s, train)
    assert m["lookup_auc"] > 0.95 > m["disc_auc"]
