"""The log a user reads: the stages' stderr carries our own lines (and progress bars), not the noise torch,
torchao, transformers, peft and datasets print when they are imported or called (pipeline/common.py
`quiet_libraries`), while a library's other warnings still show."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from stages import train
from tests.helpers import OFFLINE_TINY, env, set_params, train_params

ROOT = Path(__file__).resolve().parents[1]
# every logger the project names (stages/, pipeline/, commands/): a line in our format from any other is noise
OUR_LOGGERS = sorted({name for folder in ("stages", "pipeline", "commands") for path in (ROOT / folder).glob("*.py")
                      for name in re.findall(r'logging\.getLogger\("([^"]+)"\)', path.read_text(encoding="utf-8"))})
OUR_LINE = re.compile(rf"^\d\d:\d\d:\d\d ({'|'.join(map(re.escape, OUR_LOGGERS))}) [A-Z]+ ")
PROGRESS_BAR = re.compile(r"\d+%\|")  # tqdm: "Writing model shards: 100%|██████████| 1/1 [...]"

# What the stages import and the library calls that warned (our SFTConfig, peft wrapping a model for LoRA),
# in one process set up as run_main sets it up; then one line of ours and two library warnings that are
# not known noise, which must still show.
IMPORTS = """
import logging
from pathlib import Path
from pipeline.common import run_main

def main(argv):
    import accelerate, datasets, dvclive, peft, torch, transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from stages import train
    from tests.helpers import train_params
    train.sft_config(train_params(), Path("unused-ck"), "fp32", "adamw_torch", has_eval=False, use_cpu=True,
                     max_length=997)
    config = transformers.Gemma3TextConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                           num_attention_heads=1, num_key_value_heads=1, head_dim=16)
    peft.get_peft_model(transformers.Gemma3ForCausalLM(config), train.lora_config(train_params(lora_enabled=True)))
    logging.getLogger("train").info("imports done")
    logging.getLogger("torchao").warning("torchao: a real problem")
    logging.getLogger("datasets").warning("datasets: a real problem")

run_main(main)
"""


def foreign_lines(stderr: str) -> list[str]:
    """stderr lines that are neither ours nor a progress bar."""
    return [line for line in stderr.splitlines()
            if line.strip() and not OUR_LINE.match(line) and not PROGRESS_BAR.search(line)]


def test_our_loggers_are_found():
    assert {"pipeline", "fetch", "format", "train", "eval", "convert", "generate"} <= set(OUR_LOGGERS)


def test_library_imports_print_no_noise_and_real_warnings_still_show(tmp_path):
    """torchao's kernel-load failures and "no triton", torch's _pytree Enum deprecations, datasets' "JAX
    version ... available" and transformers' FutureWarnings (gradient_checkpointing from our SFTConfig,
    is_gradient_checkpointing from peft) are gone."""
    result = subprocess.run([sys.executable, "-c", IMPORTS], cwd=tmp_path, capture_output=True, text=True,
                            timeout=300, env=env(PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\d\d:\d\d:\d\d train INFO imports done$", result.stderr, re.M), result.stderr
    assert re.search(r" torchao WARNING torchao: a real problem$", result.stderr, re.M), result.stderr
    assert "datasets: a real problem" in result.stderr  # (datasets prints it with its own handler too)
    noise = [line for line in foreign_lines(result.stderr) if "a real problem" not in line]
    assert noise == [], "third-party noise on stderr:\n" + "\n".join(noise)


@pytest.mark.parametrize("on", [False, True])
def test_gradient_checkpointing_reaches_trl_under_its_current_name(tmp_path, on):
    """train.gradient_checkpointing becomes SFTConfig's activation_checkpointing (transformers 5), with no
    FutureWarning, and the deprecated alias that TRL reads mirrors it (TRL's own default for it is True)."""
    from trl import SFTConfig  # noqa: F401 (imported before warnings become errors)

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        config = train.sft_config(train_params(gradient_checkpointing=on), tmp_path / "ck", "fp32", "adamw_torch",
                                  has_eval=False, use_cpu=True, max_length=997)
    assert config.activation_checkpointing is on and config.gradient_checkpointing is on


@pytest.mark.integration
def test_a_stage_run_logs_only_our_lines_and_progress_bars(tmp_path):
    """The fetch stage on the tiny model (imports torch, transformers and torchao, writes a model): its
    stderr is our lines and progress bars only."""
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    set_params(params, OFFLINE_TINY)
    result = subprocess.run([sys.executable, "-m", "stages.fetch", "--params", str(params), "--raw-dir",
                             str(tmp_path / "raw"), "--model-dir", str(tmp_path / "base")],
                            cwd=ROOT, capture_output=True, text=True, timeout=600, env=env())
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\d\d:\d\d:\d\d fetch INFO base model ready in ", result.stderr, re.M), result.stderr
    noise = foreign_lines(result.stderr)
    assert noise == [], "third-party noise on stderr:\n" + "\n".join(noise)
