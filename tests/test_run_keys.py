"""Run identity: every semantic field of the schema changes the run key; the non-semantic ones do not.

Driven by the schema itself, so a field added later is covered without touching this test."""
from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from electra_bench.config import _set_path
from electra_bench.schema import RunConfig
from electra_bench.suite import NON_SEMANTIC, PRETRAIN_SECTIONS, finetune_key, pretrain_key, upstream_of
from electra_bench.tasks import TASKS


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += leaf_paths(ann, f"{prefix}{name}.")
        else:
            out.append((f"{prefix}{name}", info))
    return out


def candidates(value, info) -> list:
    """Other values of the field's type, most likely valid first."""
    ann = info.annotation
    options = [ann] if typing.get_origin(ann) is typing.Literal else (list(typing.get_args(ann)) or [ann])
    out: list = []
    for opt in options:
        if typing.get_origin(opt) is typing.Literal:
            out += [v for v in typing.get_args(opt) if v != value]
    if isinstance(value, bool):
        out.append(not value)
    elif isinstance(value, int):
        out += [value + 1, max(1, value // 2), value * 2]
    elif isinstance(value, float):
        out += [value * 0.5, value + 0.01, min(0.99, value * 1.5) if value < 1 else value * 2]
    elif isinstance(value, str):
        out += ["random" if value == "pretrained" else value + "x"]
    elif isinstance(value, list):
        out += [value[:-1] if len(value) > 1 else value + value, [0.5, 1.0]]
    elif value is None:
        out += [0.5, 2, 1e15, [1.0, 2.0, 3.0], 4096]
    return out


def mutate(base: dict, path: str, info) -> dict | None:
    value = base
    for part in path.split("."):
        value = value[part]
    for cand in candidates(value, info):
        if cand == value:
            continue
        data = _set_path(base, tuple(path.split(".")), cand)
        try:
            RunConfig.model_validate(data)
        except ValidationError:
            continue
        return data
    return None


BASE = RunConfig().model_dump(mode="json")
ROOT = Path("/nonexistent-data-root")  # data identity of a missing root is constant; fine for key tests
FIELDS = leaf_paths(RunConfig)


@pytest.mark.parametrize("path,info", FIELDS, ids=[p for p, _ in FIELDS])
def test_every_semantic_field_changes_the_key(path, info):
    changed = mutate(BASE, path, info)
    assert changed is not None, f"no valid alternative value found for {path}: extend candidates()"
    a, b = RunConfig.model_validate(BASE), RunConfig.model_validate(changed)
    spec = TASKS.get("sst2")
    if path.split(".")[0] in PRETRAIN_SECTIONS:
        differs = pretrain_key(a, ROOT) != pretrain_key(b, ROOT)
    else:
        differs = finetune_key(a, spec, 0, upstream_of(a, ROOT)) != finetune_key(b, spec, 0, upstream_of(b, ROOT))
    assert differs == (path not in NON_SEMANTIC), f"{path}: semantic={path not in NON_SEMANTIC}, key changed={differs}"


def test_finetune_key_depends_on_seed_task_and_upstream():
    run = RunConfig()
    sst2, cola = TASKS.get("sst2"), TASKS.get("cola")
    k = finetune_key(run, sst2, 0, "up1")
    assert k != finetune_key(run, sst2, 1, "up1")
    assert k != finetune_key(run, cola, 0, "up1")
    assert k != finetune_key(run, sst2, 0, "up2")
    assert k == finetune_key(run, sst2, 0, "up1")


def test_pretrain_key_ignores_finetune_section():
    a = RunConfig()
    b = RunConfig.model_validate(_set_path(BASE, ("finetune", "lr"), 1e-3))
    assert pretrain_key(a, ROOT) == pretrain_key(b, ROOT)


# --- the robustness section (issue #9) ------------------------------------------------------------------------------

# Fine-tune keys computed by the code before robustness existed (main at 206e98b): results are cached by key, so a
# suite without a `robustness:` section must keep them.
GOLDEN = {("sst2", 0, "up1"): "256b026c1d15", ("conll2003", 2, "abc"): "9f8e6291303d"}
CELLS = """name: keys
work_dir: {tmp}/work
results_dir: {tmp}/results
cells:
  - label: ELECTRA
  - {{label: ELECTRA T2, set: {{pretrain.temperature: 2.0}}}}
  - {{label: BERT, set: {{pretrain.objective: mlm}}}}
  - {{label: random init, set: {{finetune.init: random}}}}
tasks: [sst2, conll2003]
seeds: [0, 1]
"""


def _plan_keys(tmp_path: Path, robustness: str = "") -> tuple[list[str], list[str]]:
    from electra_bench.config import load_suite
    from electra_bench.suite import make_plan

    path = tmp_path / "keys.yaml"
    path.write_text(CELLS.format(tmp=tmp_path) + robustness)
    units = make_plan(load_suite(path), ROOT).units
    return [u.key for u in units if u.kind == "pretrain"], [u.key for u in units if u.kind == "finetune"]


def test_finetune_keys_without_a_robustness_section_are_unchanged():
    for (task, seed, upstream), key in GOLDEN.items():
        assert finetune_key(RunConfig(), TASKS.get(task), seed, upstream) == key
        assert finetune_key(RunConfig(), TASKS.get(task), seed, upstream, None) == key


def test_a_robustness_section_changes_finetune_keys_only(tmp_path):
    pre, plain = _plan_keys(tmp_path)
    pre_r, robust = _plan_keys(tmp_path, "robustness: {}\n")
    assert pre_r == pre  # pre-training keys never see the section
    assert not set(robust) & set(plain) and len(set(robust)) == len(robust)
    assert _plan_keys(tmp_path, "robustness: {generator_cell: ELECTRA}\n")[1] == robust  # the default, by name
    variants = ("{rates: [0.1]}", "{seed: 1}", "{kinds: [random_token, generator]}", "{generator_cell: ELECTRA T2}")
    for variant in variants:
        keys = _plan_keys(tmp_path, f"robustness: {variant}\n")[1]
        assert not set(keys) & set(robust), variant


def test_robustness_suite_shares_pretraining_keys_with_table1_small():
    from electra_bench.config import load_suite
    from electra_bench.suite import make_plan

    repo = Path(__file__).resolve().parents[1]
    keys = {}
    for name in ("robustness.yaml", "paper/table1_small.yaml"):
        plan = make_plan(load_suite(repo / "suites" / name), ROOT)
        keys[name] = {c.label: upstream_of(c.config, ROOT) for c in plan.suite.cells}
    assert keys["robustness.yaml"] == {k: keys["paper/table1_small.yaml"][k] for k in keys["robustness.yaml"]}
