"""Fine-tuned models in Hugging Face format (issue 18, `finetune.save_model`): the saved folder is a standard
`ElectraFor{Sequence,Token}Classification` + fast tokenizer that computes the harness model's logits, loads with
`transformers.pipeline`, and names the task's labels; a suite run saves it under work/<suite>/models/<run_key>/,
records the folder, logs it to MLflow, and re-runs a finished unit whose model is missing."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import tiny_model_config
from test_suite_e2e import NAMES, NEG, POS, TINY_HEAD, make_data_root
from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer, pipeline

from electra_bench import cli
from electra_bench.build import disc_dims, electra_config
from electra_bench.config import load_suite
from electra_bench.finetune import FinetuneSettings, finetune, improves, save_hf_model, score
from electra_bench.model.heads import EncoderWithHead, load_encoder
from electra_bench.results import read_predictions_file, read_records
from electra_bench.suite import make_plan
from electra_bench.tasks import TASKS, load_split
from electra_bench.tokenizer import load_tokenizer, train_wordpiece

TASK_CASES = [("sst2", "linear", 8), ("sst2", "hf", 8), ("stsb", "linear", 15), ("conll2003", "linear", 8)]  # epochs


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """The e2e test's made-up data root (SST-2, CoNLL-2003, a trained WordPiece vocab) plus a tiny STS-B."""
    return add_stsb(make_data_root(tmp_path_factory.mktemp("export-data") / "data"))


def add_stsb(root: Path) -> Path:
    stsb = root / "glue" / "STS-B"
    stsb.mkdir()
    for split, n in (("train", 60), ("dev", 12)):
        rows = ["index\tsentence1\tsentence2\tscore"]
        for i in range(n):
            a, b = f"the film was {POS[i % 5]}", f"the plot was {(POS if i % 3 else NEG)[i % 5]}"
            rows.append(f"{i}\t{a}\t{b}\t{4.5 if i % 3 else 0.5}")
        (stsb / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def settings(epochs: float = 8, keep_best: bool = False) -> FinetuneSettings:
    return FinetuneSettings(lr=3e-3, layerwise_decay=0.8, official_layer_decay=False, warmup_fraction=0.1,
                            weight_decay=0.0, adam_eps=1e-6, batch_size=8, epochs=epochs, max_seq_length=40,
                            train_examples=None, dev_examples=None, head="linear", double_unordered=False,
                            precision="fp32", device="cpu", seed=0, keep_best=keep_best)


def fine_tuned(root: Path, task: str, head: str, s: FinetuneSettings) -> tuple[EncoderWithHead, object, dict]:
    """A real tiny fine-tune (random-init 2-layer encoder) of `task` with the harness's own loop."""
    spec, tok = TASKS.get(task), load_tokenizer(root / "vocab" / "vocab.txt")
    torch.manual_seed(0)
    cfg = electra_config(disc_dims(tiny_model_config()), len(tok), tiny_model_config())
    n_out = 1 if spec.kind == "regression" else len(spec.labels)
    model = EncoderWithHead(load_encoder(None, cfg), n_out, per_token=spec.kind == "tagging", head=head)
    out = finetune(spec, model, tok, s, root, show_progress=False)
    return model.eval(), tok, out


def dev_batch(root: Path, spec, tok):
    """The dev split, tokenized as the harness does (pairs for STS-B, words for CoNLL), padded into one batch."""
    ds = load_split(spec, "dev", root)
    if spec.kind == "tagging":
        return tok(list(ds["tokens"]), is_split_into_words=True, padding=True, return_tensors="pt")
    pair = "text_b" in ds.column_names
    return tok(list(ds["text_a"]), list(ds["text_b"]) if pair else None, padding=True, return_tensors="pt")


@pytest.mark.parametrize("task,head,epochs", TASK_CASES, ids=[f"{t}-{h}" for t, h, _ in TASK_CASES])
def test_saved_model_computes_the_harness_logits(data_root, tmp_path, task, head, epochs):
    spec = TASKS.get(task)
    model, tok, _ = fine_tuned(data_root, task, head, settings(epochs))
    folder = save_hf_model(model, tok, spec, 40, tmp_path / "model")
    auto = AutoModelForTokenClassification if spec.kind == "tagging" else AutoModelForSequenceClassification
    hf, info = auto.from_pretrained(folder, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    hf.eval()
    assert type(hf).__name__ == ("ElectraForTokenClassification" if spec.kind == "tagging"
                                 else "ElectraForSequenceClassification")
    if spec.kind == "regression":
        assert hf.config.num_labels == 1 and hf.config.problem_type == "regression"
    else:
        assert [hf.config.id2label[i] for i in range(len(spec.labels))] == list(spec.labels)
        assert hf.config.label2id == {n: i for i, n in enumerate(spec.labels)}
    saved_tok = AutoTokenizer.from_pretrained(folder)
    assert saved_tok.is_fast and saved_tok.model_max_length == 40 and tok.model_max_length != 40  # a copy changed
    enc = dev_batch(data_root, spec, tok)
    assert dev_batch(data_root, spec, saved_tok)["input_ids"].equal(enc["input_ids"])  # it encodes as the harness's
    with torch.no_grad():
        ours = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        theirs = hf(**enc).logits
    mask = enc["attention_mask"].bool() if spec.kind == "tagging" else slice(None)  # padded tokens: not outputs
    ours, theirs = ours[mask], theirs[mask]
    # trained logits that differ between inputs, some of them small enough that a wrong head mapping (GELU(x) for x,
    # a lost bias) would show beyond the tolerance
    assert ours.shape == theirs.shape and ours.max() - ours.min() > 1 and ours.abs().min() < 3
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)


def test_best_keeps_the_weights_of_the_best_dev_epoch(data_root, tmp_path):
    spec = TASKS.get("sst2")
    model, tok, out = fine_tuned(data_root, "sst2", "linear", settings(epochs=5, keep_best=True))
    best = out["best"]
    scores = [c[spec.headline] for c in out["curve"]]
    assert best["headline"] == max(scores) and best["step"] == out["curve"][scores.index(max(scores))]["step"]
    assert all(v.device.type == "cpu" for v in best["state"].values())
    assert best["step"] < out["steps"]  # (seeded) the best epoch is not the last: the weights saved must differ
    # saved from the kept state while the model holds the last epoch's weights: the HF model computes the logits of
    # the best epoch's weights, not the last ones, and scores the best epoch's headline again
    hf = AutoModelForSequenceClassification.from_pretrained(
        save_hf_model(model, tok, spec, 40, tmp_path / "best", best["state"])).eval()
    enc = dev_batch(data_root, spec, tok)
    with torch.no_grad():
        last = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        model.load_state_dict(best["state"])
        ours, theirs = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]), hf(**enc).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=0)
    assert (theirs - last).abs().max() > 1e-2
    dev = load_split(spec, "dev", data_root)
    assert score(spec, theirs.argmax(-1).tolist(), list(dev["label"]))[spec.headline] == best["headline"]
    assert fine_tuned(data_root, "sst2", "linear", settings(epochs=1))[2]["best"] is None  # only when asked


def test_best_is_the_best_dev_headline_first_on_ties_and_never_nan():
    nan = float("nan")
    assert improves(0.5, None, True) and improves(nan, None, True)  # the first evaluation is always kept
    assert improves(0.6, {"headline": 0.5}, True) and not improves(0.5, {"headline": 0.5}, True)
    assert improves(0.4, {"headline": 0.5}, False) and not improves(0.6, {"headline": 0.5}, False)
    assert not improves(nan, {"headline": 0.5}, True) and improves(0.1, {"headline": nan}, True)


SUITE = TINY_HEAD.replace("{name}", "export") + """\
  finetune: {{init: random, epochs: 6, batch_size: 8, lr: 3.0e-3, dropout: 0.0, attention_dropout: 0.0,
             max_seq_length: 40, save_model: {save}}}
cells:
  - label: random init
tasks: [sst2, conll2003]
seeds: [0]
"""


suite_run = pytest.mark.slow  # the tests on `exported`, whose suite run takes ~20 s on an idle 2-core machine


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A real tiny suite (random-init encoder, SST-2 and CoNLL-2003, MLflow on) with `finetune.save_model: last`."""
    tmp = tmp_path_factory.mktemp("export")
    root = make_data_root(tmp / "data")
    # names as whole word-pieces (the e2e vocab splits them into letters, which the first-piece tagger cannot tell
    # apart: "a" begins both Alice and Acme)
    texts = (root / "corpus" / "tiny" / "a.txt").read_text().split("\n") + [n for n, _ in NAMES] * 3 + ["saw"] * 3
    train_wordpiece(iter(texts), 160, root / "vocab")
    suite = tmp / "export.yaml"
    suite.write_text(SUITE.format(root=tmp / "data", work=tmp / "work", results=tmp / "results", save="last"))
    assert cli.main(["run", str(suite), "--no-progress"]) == 0
    records = {r["task"]: r for r in read_records(tmp / "results" / "export" / "records.jsonl")}
    return tmp, suite, records


@suite_run
def test_suite_saves_each_model_beside_its_outputs_and_records_it(exported):
    tmp, _, records = exported
    for rec in records.values():
        folder = Path(rec["saved_model"])
        assert folder == tmp / "work" / "export" / "models" / rec["run_key"]
        assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= \
            {p.name for p in folder.iterdir()}
        assert rec["saved_model_weights"] == "last" and rec["saved_model_headline"] == rec["headline"]
        assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 40
    assert not list((tmp / "work" / "export" / "models").glob(".*.tmp"))  # renamed into place: no temp left


@suite_run
@pytest.mark.parametrize("aggregation", ["simple", "first"])
def test_ner_model_runs_in_the_token_classification_pipeline(exported, aggregation):
    """`first` reads each word by its first piece, as the harness trains and scores; `simple` groups piece labels
    (the same here: every name is one piece)."""
    _, _, records = exported
    ner = pipeline("token-classification", model=records["conll2003"]["saved_model"], aggregation_strategy=aggregation)
    types = {t for t in TASKS.get("conll2003").labels if t != "O"}
    assert {t[2:] for t in types} == {"PER", "LOC", "ORG", "MISC"}
    for sentence, word, group in (("Alice saw the film", "alice", "PER"), ("London saw the film", "london", "LOC")):
        entities = ner(sentence)
        assert {e["entity_group"] for e in entities} <= {t[2:] for t in types}
        assert [(e["word"], e["entity_group"]) for e in entities] == [(word, group)], entities
    assert len(ner.tokenizer.tokenize("Alice London")) == 2  # one piece each: `simple` has nothing else to group


@suite_run
def test_classifier_runs_in_the_text_classification_pipeline(exported):
    _, _, records = exported
    clf = pipeline("text-classification", model=records["sst2"]["saved_model"])
    (top,) = clf("the film was good")
    assert top["label"] in TASKS.get("sst2").labels
    every = clf("the film was bad", top_k=None)
    assert {x["label"] for x in every} == set(TASKS.get("sst2").labels)
    assert sum(x["score"] for x in every) == pytest.approx(1.0, abs=1e-5)


@suite_run
def test_saved_models_reproduce_the_records_dev_predictions(exported):
    """The saved folder is the model the record scores: its dev-set outputs (through HF code and the saved
    tokenizer) give the probabilities (rounded to 4 places) and tags of the record's predictions file."""
    tmp, _, records = exported
    folder = tmp / "results" / "export"
    data = tmp / "data"
    sst = records["sst2"]
    model = AutoModelForSequenceClassification.from_pretrained(sst["saved_model"]).eval()
    tok = AutoTokenizer.from_pretrained(sst["saved_model"])
    texts = [line.split("\t")[0] for line in (data / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:]]
    with torch.no_grad():
        probs = model(**tok(texts, padding=True, truncation=True, return_tensors="pt")).logits.softmax(-1)
    rows = read_predictions_file(folder, sst)
    torch.testing.assert_close(probs, torch.tensor([r["probs"] for r in rows]), atol=6e-5, rtol=0)
    ner = records["conll2003"]
    model = AutoModelForTokenClassification.from_pretrained(ner["saved_model"]).eval()
    tok = AutoTokenizer.from_pretrained(ner["saved_model"])
    sentences = conll_words(data / "conll2003" / "validation.txt")
    for words, row in zip(sentences, read_predictions_file(folder, ner)):
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            tags = model(**enc).logits[0].argmax(-1).tolist()
        first = {w: t for t, w in reversed(list(enumerate(enc.word_ids()))) if w is not None}
        assert [model.config.id2label[tags[first[w]]] for w in range(len(words))] == row["pred"]


def conll_words(path: Path) -> list[list[str]]:
    out, cur = [], []
    for line in path.read_text().splitlines():
        if line.startswith("-DOCSTART-"):
            continue
        if not line.strip():
            if cur:
                out.append(cur)
            cur = []
        else:
            cur.append(line.split()[0])
    return out + ([cur] if cur else [])


@suite_run
def test_mlflow_holds_the_model_folder(exported):
    from mlflow.tracking import MlflowClient

    tmp, _, records = exported
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp / 'work' / 'export' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("export")
    for rec in records.values():
        (run,) = client.search_runs([exp.experiment_id], f"tags.run_key = '{rec['run_key']}'")
        assert run.data.tags["saved_model"] == rec["saved_model"] and run.data.tags["saved_model_artifact"] == "model"
        names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "model")}
        assert {"config.json", "model.safetensors", "tokenizer.json"} <= names


@suite_run
def test_a_finished_unit_without_its_model_runs_again(exported):
    tmp, suite, records = exported
    assert all(u.status == "done" for u in make_plan(load_suite(suite)).units)
    gone = Path(records["sst2"]["saved_model"])
    backup = gone.with_name("kept")
    shutil.copytree(gone, backup)
    shutil.rmtree(gone)
    try:
        status = {u.task: u.status for u in make_plan(load_suite(suite)).units}
        assert status == {"sst2": "pending", "conll2003": "done"}
        best = load_suite(suite, ["finetune.save_model=best"])  # other weights than the ones saved: run again
        assert {u.status for u in make_plan(best).units} == {"pending"}
        none = load_suite(suite, ["finetune.save_model=none"])  # the same run keys, and nothing asked of them
        assert {u.status for u in make_plan(none).units} == {"done"}
        assert {u.key for u in make_plan(none).units} == {r["run_key"] for r in records.values()}
    finally:
        shutil.move(backup, gone)
