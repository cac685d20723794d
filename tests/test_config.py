"""Suite loading: errors name file, line and dotted path (with did-you-mean), `extends`, `--set`, YAML safety,
and every suite file in suites/ validates."""
import textwrap
from pathlib import Path

import pytest

from electra_bench.config import ConfigError, load_suite, parse_override
from electra_bench.tasks import TASKS

REPO = Path(__file__).resolve().parent.parent
# files starting with "_" are parents for `extends`, not suites of their own
SUITES = sorted(p for p in [*REPO.glob("suites/**/*.yaml"), *REPO.glob("suites/**/*.yml")]
                if not p.name.startswith("_"))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load_error(path: Path, overrides=()) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_suite(path, list(overrides))
    return info.value


def assert_error(err: ConfigError, path: Path, line: int | None, dotted: str | None, *fragments: str):
    text = str(err)
    assert path.name in text and err.file == str(path)
    assert err.line == line, text
    if line is not None:
        assert f"{path.name}:{line}:" in text
    assert err.path == dotted, text
    if dotted:
        assert dotted in text
    for fragment in fragments:
        assert fragment in text, text


# --- unknown keys, with line numbers and did-you-mean ------------------------------------------------------------

def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "top.yaml", """
        name: t
        descripton: typo
        """)
    assert_error(load_error(path), path, 2, "descripton", "unknown key 'descripton'", "did you mean 'description'")


def test_unknown_nested_key(tmp_path):
    path = write(tmp_path, "nested.yaml", """
        name: t
        base:
          model:
            size: tiny
          pretrain:
            lr: 0.001
            disc_wieght: 10
        """)
    assert_error(load_error(path), path, 7, "base.pretrain.disc_wieght", "did you mean 'disc_weight'")


def test_unknown_key_inside_an_axis_path(tmp_path):
    path = write(tmp_path, "axes.yaml", """
        name: t
        base:
          pretrain:
            lr: 0.001
        axes:
          pretrain.mask_prob: [0.1, 0.2]
          pretrain.disc_wieght: [1, 10]
        """)
    assert_error(load_error(path), path, 7, "pretrain.disc_wieght", "did you mean 'disc_weight'")


def test_unknown_key_in_a_cell_set(tmp_path):
    path = write(tmp_path, "cells.yaml", """
        name: t
        cells:
          - label: A
          - label: B
            set:
              pretrain.disc_wieght: 1
        """)
    assert_error(load_error(path), path, 6, "pretrain.disc_wieght", "did you mean 'disc_weight'")


def test_axis_path_outside_the_run_sections(tmp_path):
    path = write(tmp_path, "section.yaml", """
        name: t
        axes:
          pretrian.lr: [0.001]
        """)
    assert_error(load_error(path), path, 3, "pretrian.lr", "did you mean 'pretrain'")


# --- wrong types and values ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("key,value,dotted,fragment", [
    ("batch_size", "lots", "base.pretrain.batch_size", "valid integer"),
    ("generator_size", "0", "base.pretrain.generator_size", "generator_size must be in (0, 1]"),
    ("mask_prob", "1.5", "base.pretrain.mask_prob", "less than 1"),
    ("objective", "electra_20", "base.pretrain.objective", "electra_20"),
])
def test_bad_values_in_base(tmp_path, key, value, dotted, fragment):
    path = write(tmp_path, "bad.yaml", f"""
        name: t
        base:
          pretrain:
            lr: 0.001
            {key}: {value}
        """)
    assert_error(load_error(path), path, 5, dotted, fragment)


def test_bad_axis_value_names_the_axis_line(tmp_path):
    path = write(tmp_path, "bad_axis.yaml", """
        name: t
        base:
          pretrain:
            lr: 0.001
        axes:
          pretrain.mask_prob: [0.15, 1.5]
        """)
    assert_error(load_error(path), path, 6, "pretrain.mask_prob", "less than 1", "1.5")


def test_invalid_combination_from_an_axis_names_the_axis_line(tmp_path):
    path = write(tmp_path, "tying.yaml", """
        name: t
        base:
          model:
            size: tiny
        axes:
          pretrain.tying: [none, all]
        """)
    err = load_error(path)
    assert "tying 'all'" in str(err) and "generator_size 1" in str(err)
    assert err.line == 6 and err.path == "pretrain.tying", str(err)


def test_invalid_combination_in_base(tmp_path):
    path = write(tmp_path, "tying_base.yaml", """
        name: t
        base:
          pretrain:
            tying: all
            generator_size: 0.25
        """)
    err = load_error(path)
    assert f"{path.name}:3:" in str(err) and err.path == "base.pretrain"
    assert "tying 'all'" in str(err)


def test_empty_axis(tmp_path):
    path = write(tmp_path, "empty.yaml", """
        name: t
        axes:
          pretrain.lr: []
        """)
    assert_error(load_error(path), path, 2, "axes", "axis 'pretrain.lr' has no values")


def test_unknown_task_with_did_you_mean(tmp_path):
    assert "sst2" in TASKS.names()
    path = write(tmp_path, "task.yaml", """
        name: t
        tasks:
          - mrpc
          - sst-2
        """)
    assert_error(load_error(path), path, 4, "tasks[1]", "unknown task 'sst-2'", "did you mean 'sst2'")


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/abs"])
def test_suite_name_cannot_leave_its_folder(tmp_path, name):
    path = write(tmp_path, "name.yaml", f"""
        name: "{name}"
        """)
    assert_error(load_error(path), path, 1, "name")


def test_name_is_required(tmp_path):
    path = write(tmp_path, "noname.yaml", "description: no name\n")
    assert load_error(path).path == "name"


# --- YAML --------------------------------------------------------------------------------------------------------

def test_yaml_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, "syntax.yaml", """
        name: t
        description: fine
        base: model: tiny
        seeds: [0]
        """)
    err = load_error(path)
    assert "YAML syntax error" in str(err) and err.line == 3 and f"{path.name}:3:" in str(err)


def test_python_object_tags_are_refused_and_not_executed(tmp_path):
    marker = tmp_path / "PWNED"
    path = write(tmp_path, "evil.yaml", f"""
        name: t
        description: !!python/object/apply:os.system ["touch {marker}"]
        """)
    err = load_error(path)
    assert err.line == 2 and "python/object" in str(err)
    assert not marker.exists()


def test_scientific_notation_is_a_float(tmp_path):
    path = write(tmp_path, "sci.yaml", """
        name: t
        base:
          pretrain:
            lr: 1e-4
        axes:
          pretrain.lr: [1e-4, 3E-4]
        """)
    suite = load_suite(path)
    assert suite.config.base.pretrain.lr == 1e-4
    values = [cell.axes["pretrain.lr"] for cell in suite.cells]
    assert values == [1e-4, 3e-4] and all(type(v) is float for v in values)  # axes are untyped (list[Any])
    assert [cell.config.pretrain.lr for cell in suite.cells] == [1e-4, 3e-4]


def test_quoted_scientific_notation_stays_a_string(tmp_path):
    path = write(tmp_path, "quoted.yaml", """
        name: t
        description: "1e5"
        cells:
          - label: "2e-3"
        """)
    suite = load_suite(path)
    assert suite.config.description == "1e5" and suite.cells[0].label == "2e-3"


def test_not_a_mapping(tmp_path):
    path = write(tmp_path, "list.yaml", "- a\n- b\n")
    assert "mapping" in str(load_error(path))


# --- extends -----------------------------------------------------------------------------------------------------

def test_extends_deep_merges(tmp_path):
    write(tmp_path, "parent.yaml", """
        name: parent
        description: from the parent
        tasks: [rte, mrpc]
        base:
          pretrain:
            disc_weight: 10
            mask_prob: 0.2
          model:
            size: mini
        """)
    child = write(tmp_path, "child.yaml", """
        name: child
        extends: parent.yaml
        tasks: [cola]
        base:
          pretrain:
            disc_weight: 20
        """)
    cfg = load_suite(child).config
    assert cfg.name == "child" and cfg.description == "from the parent"
    assert cfg.base.pretrain.disc_weight == 20  # overridden
    assert cfg.base.pretrain.mask_prob == 0.2  # sibling kept
    assert cfg.base.model.size == "mini"  # other section kept
    assert cfg.tasks == ["cola"]  # lists are replaced whole


def test_error_in_a_parent_names_the_parent_file(tmp_path):
    parent = write(tmp_path, "parent.yaml", """
        name: parent
        base:
          pretrain:
            disc_wieght: 10
        """)
    child = write(tmp_path, "child.yaml", """
        name: child
        extends: parent.yaml
        """)
    assert_error(load_error(child), parent, 4, "base.pretrain.disc_wieght", "did you mean 'disc_weight'")


def test_cyclic_extends(tmp_path):
    write(tmp_path, "a.yaml", "name: a\nextends: b.yaml\n")
    write(tmp_path, "b.yaml", "name: b\nextends: a.yaml\n")
    err = load_error(tmp_path / "a.yaml")
    assert "cyclic" in str(err) and "a.yaml -> b.yaml -> a.yaml" in str(err)


def test_extends_missing_file(tmp_path):
    path = write(tmp_path, "orphan.yaml", "name: o\nextends: nowhere.yaml\n")
    err = load_error(path)
    assert "file not found" in str(err) and "nowhere.yaml" in str(err)


# --- --set overrides ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,path,value", [
    ("pretrain.disc_weight=10", ("base", "pretrain", "disc_weight"), 10),
    ("pretrain.lr=1e-4", ("base", "pretrain", "lr"), 1e-4),
    ("pretrain.mask_prob=0.25", ("base", "pretrain", "mask_prob"), 0.25),
    ("pretrain.tying=none", ("base", "pretrain", "tying"), "none"),
    ("seeds=[1,2]", ("seeds",), [1, 2]),
    ("tasks=[rte]", ("tasks",), ["rte"]),
])
def test_parse_override_types_values(text, path, value):
    got_path, got = parse_override(text)
    assert got_path == path and got == value and type(got) is type(value)


def test_set_overrides_apply_and_validate(tmp_path):
    path = write(tmp_path, "s.yaml", """
        name: t
        base:
          pretrain:
            disc_weight: 50
            mask_prob: 0.2
        """)
    cfg = load_suite(path, ["pretrain.disc_weight=10", "seeds=[1,2]", "pretrain.lr=1e-4"]).config
    assert cfg.base.pretrain.disc_weight == 10.0 and cfg.base.pretrain.mask_prob == 0.2
    assert cfg.seeds == [1, 2] and cfg.base.pretrain.lr == 1e-4
    err = load_error(path, ["pretrain.disc_wieght=10"])
    assert err.file == "--set" and "did you mean 'disc_weight'" in str(err)
    err = load_error(path, ["pretrain.mask_prob=2"])
    assert err.path == "base.pretrain.mask_prob" and err.file == "--set"
    with pytest.raises(ConfigError):
        parse_override("pretrain.disc_weight")


# --- every suite in the repository ---------------------------------------------------------------------------------

@pytest.mark.skipif(not SUITES, reason="no suite files under suites/ yet")
@pytest.mark.parametrize("path", SUITES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_suite_file_validates(path):
    from electra_bench.config import _load_with_extends

    scales = list(_load_with_extends(path)[0].get("scales") or {None: None})
    for scale in scales:  # every scale a suite declares (cpu and paper for suites/paper/*)
        suite = load_suite(path, scale=scale)
        assert suite.cells, f"{path} resolves to no cells"
        assert len({c.label for c in suite.cells}) == len(suite.cells)
        assert suite.config.tasks, f"{path} ({scale}) has no tasks"
