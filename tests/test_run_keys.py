"""Run identity: every semantic field of the schema changes the run key; the non-semantic ones do not.

Driven by the schema itself, so a field added later is covered without touching this test."""
from __future__ import annotations

import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from electra_bench.config import set_path
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
        data = set_path(base, tuple(path.split(".")), cand)
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
    b = RunConfig.model_validate(set_path(BASE, ("finetune", "lr"), 1e-3))
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


# --- pretraining seeds (issue #13) ----------------------------------------------------------------------------------


def _plan(tmp_path: Path, extra: str = ""):
    from electra_bench.config import load_suite
    from electra_bench.suite import make_plan

    path = tmp_path / "keys.yaml"
    path.write_text(CELLS.format(tmp=tmp_path) + extra)
    return make_plan(load_suite(path), ROOT)


def test_pretrain_seeds_copy_pretrained_cells_and_keep_the_default_seeds_keys(tmp_path):
    from electra_bench.runner import unit_name
    from electra_bench.suite import base_record

    plain, seeded = _plan(tmp_path), _plan(tmp_path, "pretrain_seeds: [0, 1, 2]\n")
    assert _plan(tmp_path, "pretrain_seeds: [0]\n").units[0].key == plain.units[0].key
    pre = [u for u in seeded.units if u.kind == "pretrain"]
    assert len(pre) == 3 * 3 and len({u.key for u in pre}) == 9  # ELECTRA, ELECTRA T2, BERT x 3 seeds
    assert {u.key for u in plain.units} < {u.key for u in seeded.units}  # seed 0 = the keys without the list
    ft = [u for u in seeded.units if u.kind == "finetune"]
    assert len(ft) == (3 * 3 + 1) * 2 * 2 and len({u.key for u in ft}) == len(ft)  # random init: not copied
    by_seed = {(u.cell.label, u.cell.pretrain_seed) for u in ft}
    assert ("random init", None) in by_seed and ("BERT", 2) in by_seed
    rec = base_record(seeded, next(u for u in ft if u.cell.pretrain_seed == 2))
    assert rec["pretrain_seed"] == 2 and rec["cell"] == rec["cell"].split("/")[0]  # one table row per cell
    assert base_record(seeded, next(u for u in ft if u.cell.label == "random init"))["pretrain_seed"] is None
    assert unit_name(next(u for u in ft if u.cell.pretrain_seed == 1)).startswith("finetune/ELECTRA/pretrain_seed1/")
    assert unit_name(plain.units[1]) == "finetune/ELECTRA/sst2/seed0"


def test_pretrain_seeds_refuse_a_pretrain_seed_axis(tmp_path):
    from electra_bench.config import ConfigError

    with pytest.raises(ConfigError, match="pretrain.seed is set by pretrain_seeds"):
        _plan(tmp_path, "pretrain_seeds: [0, 1]\naxes: {pretrain.seed: [3, 4]}\n")
    with pytest.raises(ConfigError, match="without repeats"):
        _plan(tmp_path, "pretrain_seeds: [1, 1]\n")


def test_a_row_overrides_the_suites_pretrain_seeds(tmp_path):
    text = CELLS.format(tmp=tmp_path).replace("{label: BERT, set: {pretrain.objective: mlm}}",
                                              "{label: BERT, set: {pretrain.objective: mlm}, pretrain_seeds: [0]}")
    from electra_bench.config import load_suite
    from electra_bench.suite import make_plan

    (tmp_path / "row.yaml").write_text(text + "pretrain_seeds: [0, 1]\n")
    units = make_plan(load_suite(tmp_path / "row.yaml"), ROOT).units
    seeds = {(u.cell.label, u.cell.pretrain_seed) for u in units if u.kind == "pretrain"}
    assert seeds == {("ELECTRA", 0), ("ELECTRA", 1), ("ELECTRA T2", 0), ("ELECTRA T2", 1), ("BERT", 0)}


# --- GPU options (issue 15) -----------------------------------------------------------------------------------------

# Pre-training keys computed by main before the GPU options existed (8bdf040): at their defaults they must stay.
PRETRAIN_GOLDEN = {(): "6156f598ffca", (("objective", "mlm"), ("batch_size", 32)): "55f6376211f3"}


def test_pretrain_keys_without_gpu_options_are_unchanged():
    for sets, key in PRETRAIN_GOLDEN.items():
        assert pretrain_key(RunConfig.model_validate({"pretrain": dict(sets)}), ROOT) == key


@pytest.mark.parametrize("path,value,semantic", [
    ("fused_adam", True, False), ("compile", "max-autotune", False), ("sdpa_backend", "flash", False),
    ("tf32", False, True), ("grad_accumulation", 4, True)])
def test_gpu_options_enter_the_key_only_when_they_change_numerics(path, value, semantic):
    a, b = RunConfig(), RunConfig.model_validate({"pretrain": {path: value}})
    assert (pretrain_key(a, ROOT) != pretrain_key(b, ROOT)) == semantic


@pytest.mark.parametrize("pretrain,message", [
    ({"fused_adam": True, "adam_bias_correction": False}, "runs unfused"),
    ({"batch_size": 100, "grad_accumulation": 8}, "not a multiple of grad_accumulation"),
    ({"grad_accumulation": 0}, "greater than or equal to 1"),
    ({"compile": "fast"}, "compile"), ({"sdpa_backend": "flash2"}, "sdpa_backend")])
def test_gpu_option_errors(pretrain, message):
    with pytest.raises(ValidationError, match=message):
        RunConfig.model_validate({"pretrain": pretrain})
