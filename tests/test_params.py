"""params.yaml loads into typed sections; bad values fail early, naming every key."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml

from pipeline.params import SECTIONS, ParamsError, load_params, parse_section, read_yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_section_loads():
    loaded = load_params(*SECTIONS, path=ROOT / "params.yaml")
    assert [type(obj) for obj in loaded] == list(SECTIONS.values())


def test_every_dvc_param_key_exists_and_loads():
    """The config test: each key a dvc.yaml stage declares is in params.yaml and validates."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    raw = read_yaml(ROOT / "params.yaml")
    declared = [key for stage in dvc["stages"].values() for key in stage.get("params", [])]
    assert declared, "dvc.yaml declares no params"
    for key in declared:
        node = raw
        for part in key.split("."):
            assert part in node, f"dvc.yaml names {key} but params.yaml lacks it"
            node = node[part]
        load_params(key.split(".")[0], path=ROOT / "params.yaml")
    # and every section in params.yaml is read by some stage
    assert {k.split(".")[0] for k in declared} == set(raw)


def test_interpolated_paths_in_dvc_yaml_exist_in_params():
    """Every ${key} dvc.yaml interpolates names a scalar of params.yaml (DVC would fail the whole graph otherwise)."""
    text = (ROOT / "dvc.yaml").read_text()
    raw = read_yaml(ROOT / "params.yaml")
    refs = re.findall(r"\$\{([^}]+)\}", text)
    assert {"data.path", "eval.split"} <= set(refs)  # the interpolations dvc.yaml is known to make
    for ref in refs:
        node = raw
        for part in ref.split("."):
            assert isinstance(node, dict) and part in node, f"dvc.yaml interpolates ${{{ref}}} but params.yaml has no {ref}"
            node = node[part]
        assert isinstance(node, (str, int, float)) and not isinstance(node, bool), f"${{{ref}}} is not a scalar: {node!r}"


def test_every_params_key_has_a_comment():
    for number, line in enumerate((ROOT / "params.yaml").read_text().splitlines(), 1):
        if re.match(r"^\s*[A-Za-z_]+:", line):
            assert "#" in line, f"params.yaml line {number} has no comment: {line.strip()}"


def test_dvc_exp_set_param_writes_a_float(tmp_path):
    """`dvc exp run -S train.lr=2e-5` writes `lr: 2e-05`: must load as the float 2e-05."""
    params = tmp_path / "params.yaml"
    text = (ROOT / "params.yaml").read_text()
    params.write_text(re.sub(r"(\n  lr: )\S+", r"\g<1>2e-05", text))
    assert "lr: 2e-05" in params.read_text()
    assert yaml.safe_load(params.read_text())["train"]["lr"] == "2e-05"  # the PyYAML trap
    train = load_params("train", path=params)
    assert isinstance(train.lr, float) and train.lr == 2e-05


def test_dvc_exp_run_set_param_round_trip(tmp_path):
    """The real thing: DVC's own -S writer, then our loader."""
    from dvc.utils.serialize import modify_yaml

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    with modify_yaml(tmp_path / "params.yaml") as data:  # what `dvc exp run -S` uses
        data["train"]["lr"] = 2e-5
    assert "2e-05" in (tmp_path / "params.yaml").read_text()
    assert load_params("train", path=tmp_path / "params.yaml").lr == 2e-05


def _train(**overrides):
    raw = read_yaml(ROOT / "params.yaml")["train"]
    raw.update(overrides)
    return raw


def test_one_message_names_every_bad_key():
    bad = _train(lr="fast", epochs=-1, per_device_batch_size=0, optim="sgd", bogus=3)
    with pytest.raises(ParamsError) as err:
        parse_section("train", bad)
    message = str(err.value)
    for key in ("train.lr", "train.epochs", "train.per_device_batch_size", "train.optim", "train.bogus"):
        assert key in message
    assert "\n" not in message


def test_numeric_strings_and_ints_are_converted():
    train = parse_section("train", _train(lr="2e-5", epochs=3, max_steps=10.0))
    assert train.lr == 2e-5 and isinstance(train.epochs, float) and train.max_steps == 10


def test_bool_is_not_a_number():
    with pytest.raises(ParamsError, match="train.max_steps"):
        parse_section("train", _train(max_steps=True))


def test_missing_key_is_reported():
    raw = _train()
    del raw["seed"]
    with pytest.raises(ParamsError, match="train.seed: missing"):
        parse_section("train", raw)


def test_nested_section_errors_name_the_full_path():
    raw = _train()
    raw["lora"] = dict(raw["lora"], r=0, extra=1)
    with pytest.raises(ParamsError) as err:
        parse_section("train", raw)
    assert "train.lora.r" in str(err.value) and "train.lora.extra" in str(err.value)


def test_missing_file_and_missing_section(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params("train", path=tmp_path / "nope.yaml")
    (tmp_path / "p.yaml").write_text("data: {}\n")
    with pytest.raises(ParamsError, match="train: section missing"):
        load_params("train", path=tmp_path / "p.yaml")


def test_cross_field_checks():
    raw = read_yaml(ROOT / "params.yaml")
    with pytest.raises(ParamsError, match="data.path"):
        parse_section("data", dict(raw["data"], source="local", path=""))
    with pytest.raises(ParamsError, match="kv_cache_max_len"):
        parse_section("convert", dict(raw["convert"], prefill_seq_lens=[2048], kv_cache_max_len=1024))
