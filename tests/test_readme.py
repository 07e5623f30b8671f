"""Every command the README shows is exercised, as written.

The commands are the lines of the README's ```bash blocks (continuations joined, comments dropped). Each one
is in exactly one of:
- CI: `.ci/run` runs it (installing, and the two test tiers CI runs);
- RUN: a test of this file runs it, letter for letter, from the repository root of a user's copy of the
  project in a plain shell (`source .venv/bin/activate && ...` for the lines the README runs activated), on
  the tiny offline sources (integration tier);
- EXPANDED: it needs what a test here has not got (the network, a GPU, the hub, hours on the real 270M):
  `make -n` expands the line as written, and the target itself runs small where the reason says.
A new README command fails `test_every_readme_command_is_exercised` until it is placed here.
"""

from __future__ import annotations

import ast
import inspect
import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import ROOT
from tests.test_make import QUICK_PIPELINE, shell, user_checkout

README = ROOT / "README.md"

CI = {"make setup", "make test", "make test-integration"}
# command -> the test below that runs it as written
RUN = {
    "source .venv/bin/activate": "test_activated_dvc_experiment_and_the_dvc_commands",
    "dvc exp run -S train.lr=2e-5": "test_activated_dvc_experiment_and_the_dvc_commands",
    "dvc exp show": "test_activated_dvc_experiment_and_the_dvc_commands",
    "make convert": "test_activated_dvc_experiment_and_the_dvc_commands",
    "dvc remote add -d storage s3://my-bucket/functiongemma": "test_activated_dvc_experiment_and_the_dvc_commands",
    "dvc remote add -d storage /mnt/shared/dvc-store": "test_activated_dvc_experiment_and_the_dvc_commands",
    "dvc push": "test_activated_dvc_experiment_and_the_dvc_commands",
    "dvc pull": "test_activated_dvc_experiment_and_the_dvc_commands",
    'python -m commands.predict "Turn on the flashlight"': "test_predict_and_push_dry_run",
    'python -m commands.predict "Email ana@example.org about lunch" --raw': "test_predict_and_push_dry_run",
    'python -m commands.predict "..." --model models/base --tools my_tools.json': "test_predict_and_push_dry_run",
    "python -m commands.push --repo your-name/x --dry-run": "test_predict_and_push_dry_run",
    "dvc exp run -S train.num_processes=2 train": "test_several_processes_both_ways",
    "accelerate launch --multi_gpu --num_processes 2 -m stages.train --params params.yaml --data-dir data/formatted "
    "--base-model models/base --out-dir models/finetuned --checkpoint-dir models/checkpoints --metrics "
    "metrics/train.json --live-dir metrics/train --record metrics/record/train.json": "test_several_processes_both_ways",
    "make sweep GRID=my_grid.yaml": "test_sweep_of_your_own_grid_and_applying_an_experiment",
    "make apply EXP=sweep-fp32-detach-lr1e-3": "test_sweep_of_your_own_grid_and_applying_an_experiment",
    "make demo": "test_demo_help_and_experiments",
    "make help": "test_demo_help_and_experiments",
    "make sample": "test_predict_and_push_dry_run",
    "make experiments": "test_demo_help_and_experiments",
    "make experiments SORT=exact": "test_demo_help_and_experiments",
    "dvc exp show --md --only-changed --drop '^(?!(data|model|format|train|eval|convert)\\.)' --keep '^Experiment$|^exact_match_finetuned(_n|_ci_low|_ci_high)?$|^exact_match_litertlm_app(_ci_low|_ci_high)?$|^runtime_seconds$'":
        "test_demo_help_and_experiments",
}
SMALL_BENCH = "the target runs with small arguments in test_make.py::test_each_cpu_bench_target_runs_from_the_repository_root (make test-slow)"
# command -> (why it is only expanded here, a fragment its expansion must contain)
EXPANDED = {
    "make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu":
        ("downloads from PyTorch's own index", "--index-url https://download.pytorch.org/whl/cpu"),
    "make sweep": ("hours on the real 270M; the same target runs for real with GRID=my_grid.yaml above",
                   "--grid \"bench/sweep_demo.yaml\""),
    "make sweep ONLY=fp32-detach-lr1e-3,bf16-detach-lr1e-3": ("the same", '--only "fp32-detach-lr1e-3,bf16-detach-lr1e-3"'),
    "make learning-curve": (f"300 steps of the real 270M: {SMALL_BENCH}", "--max-steps 300 --checkpoints \"100,200\""),
    'make learning-curve STEPS=400 CHECKPOINTS=100,200,300 BENCH_ARGS="--set train.lora.enabled=false --set train.lr=5e-5"':
        (f"400 steps of the real 270M: {SMALL_BENCH}", "--max-steps 400 --checkpoints \"100,200,300\" --set train.lora.enabled=false"),
    "make bench-train": (SMALL_BENCH, "bench/train_bench.py --grad-accum 2"),
    "make bench-eval": (SMALL_BENCH, "bench/eval_bench.py --examples 32"),
    'make bench-train BENCH_ARGS="--only ours,ours+detach_developer_turn"': (SMALL_BENCH, "--only ours,ours+detach_developer_turn"),
    "make bench-accuracy": (f"hours: {SMALL_BENCH}", "bench/recipe_accuracy.py --eval-rows 150 --seeds 3"),
    "make bench-gpu": ("needs a GPU", "bench/train_bench.py --synthetic"),
    "make bench-quant": (f"four exports of the real 270M: {SMALL_BENCH}", "bench/quant_bench.py"),
    "make push REPO=your-name/functiongemma-mobile-actions": (
        "uploads to the Hugging Face Hub (the upload itself is tested with the hub faked: tests/test_push.py)",
        '--repo "your-name/functiongemma-mobile-actions"'),
    "make test-slow": ("the real 270M; not CI's tier", "-m slow"),
    "make bench": (SMALL_BENCH, "bench/eval_bench.py --examples 32"),
    "make clean-venv": ("it would delete the environment the tests run in", "rm -rf .venv"),
}


def readme_commands(text: str) -> list[str]:
    """The command lines of the ```bash blocks: `\\` continuations joined, comments and blank lines dropped."""
    commands, in_block, pending = [], False, ""
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block and line.strip() == "```bash"
            continue
        if not in_block:
            continue
        code = pending + re.sub(r"(^|\s)#.*$", "", line).rstrip()
        if code.endswith("\\"):
            pending = code[:-1].rstrip() + " "
            continue
        pending = ""
        if code.strip():
            commands.append(" ".join(code.split()))
    return commands


def test_readme_commands_are_read_as_a_person_reads_them():
    text = "x\n```bash\nmake a   # does a\n# a comment\nrun --x 1 \\\n    --y 2  # two lines\n```\n```\nnot bash\n```\n"
    assert readme_commands(text) == ["make a", "run --x 1 --y 2"]


def test_every_readme_command_is_exercised():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    placed = [c for c in commands if c in CI or c in RUN or c in EXPANDED]
    missing = [c for c in commands if c not in placed]
    assert not missing, f"README commands no test exercises (place them in tests/test_readme.py): {missing}"
    assert len(set(CI) | set(RUN) | set(EXPANDED)) == len(CI) + len(RUN) + len(EXPANDED)  # each in one place only
    stale = sorted((set(CI) | set(RUN) | set(EXPANDED)) - set(commands))
    assert not stale, f"tests/test_readme.py places commands the README no longer shows: {stale}"
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert all(re.search(rf"^{re.escape(c)}$", ci_script, re.M) for c in CI)
    module = sys.modules[__name__]
    for command, test_name in RUN.items():
        tree = ast.parse(textwrap.dedent(inspect.getsource(getattr(module, test_name))))
        strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
        assert any(command in text for text in strings), f"{test_name} does not run {command!r} as written"


# ---------------------------------------------------------------- the commands, run (integration tier)

MY_GRID = """\
base:
  data.source: sample
  model.source: tiny
  format.validation_rows: 4
  eval.split: validation
  eval.compare_base: false
  eval.max_new_tokens: 4
  train.per_device_batch_size: 2
  train.gradient_accumulation_steps: 1
  train.eval_rows: 2
  train.eval_steps: 1000
  train.save_strategy: steps
  train.save_steps: 1000
experiments:
  fp32-detach-lr1e-3: {train.precision: fp32, train.detach_developer_turn: true, train.lr: 0.001, train.max_steps: 2}
"""
MY_TOOLS = [{"type": "function", "function": {"name": "set_alarm", "description": "Sets an alarm.", "parameters": {
    "type": "object", "properties": {"time": {"type": "string", "description": "HH:MM"}}, "required": ["time"]}}}]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A user's copy of the project (plain shell, the test run's environment as .venv) after `make repro`."""
    repo = user_checkout(tmp_path_factory.mktemp("readme"), QUICK_PIPELINE)
    out = shell("make repro", repo)
    for stage in ("fetch", "format", "train", "eval", "convert_litertlm"):
        assert f"Running stage '{stage}'" in out, stage
    return repo


def activated(command: str, repo: Path, timeout: int = 900) -> str:
    return shell(f"source .venv/bin/activate && {command}", repo, timeout=timeout)


@pytest.mark.integration
def test_activated_dvc_experiment_and_the_dvc_commands(checkout, tmp_path):
    assert next((checkout / "models/litertlm").glob("*.litertlm"))
    assert "Running stage" not in shell("make convert", checkout)  # make repro made it; nothing changed since
    out = shell("source .venv/bin/activate && dvc exp run -S train.lr=2e-5", checkout)
    assert "Running stage 'train'" in out and "Running stage 'fetch'" not in out
    assert json.loads((checkout / "metrics/train.json").read_text())["lr"] == 2e-5
    assert "workspace" in activated("dvc exp show", checkout)  # DVC's own table (its cells are cut at the terminal's width)
    activated("dvc remote add -d storage s3://my-bucket/functiongemma", checkout)
    activated("dvc remote remove storage", checkout)  # the README's two remotes are alternatives
    activated("dvc remote add -d storage /mnt/shared/dvc-store", checkout)
    store = tmp_path / "dvc-store"
    activated(f"dvc remote modify storage url {store}", checkout)  # this machine's /mnt is not the test's to write
    activated("dvc push", checkout)
    assert any(store.rglob("*")), "dvc push stored nothing"
    shutil.rmtree(checkout / "models/base")
    activated("dvc pull", checkout)
    assert (checkout / "models/base/config.json").is_file()


@pytest.mark.integration
def test_predict_and_push_dry_run(checkout):
    def calls(out: str) -> list:  # the JSON line of parsed calls (the tiny random model makes none)
        return json.loads(next(line for line in out.splitlines() if line.startswith("[")))

    assert isinstance(calls(activated('python -m commands.predict "Turn on the flashlight"', checkout)), list)
    out = activated('python -m commands.predict "Email ana@example.org about lunch" --raw', checkout)
    assert isinstance(calls(out), list) and out.index("[") > 0  # the generated text comes first
    (checkout / "my_tools.json").write_text(json.dumps(MY_TOOLS))
    assert isinstance(calls(activated('python -m commands.predict "..." --model models/base --tools my_tools.json', checkout)), list)
    sample = checkout / "data/sample/mobile_actions_sample.jsonl"
    committed = sample.read_bytes()
    shell("make sample", checkout)
    assert sample.read_bytes() == committed
    card = activated("python -m commands.push --repo your-name/x --dry-run", checkout)
    assert card.startswith("---\nlibrary_name: transformers\n") and "| **exact_match** |" in card
    assert "would upload functiongemma-finetuned.litertlm" in card  # and uploads nothing: no token needed


@pytest.mark.integration
def test_several_processes_both_ways(checkout):
    out = activated("dvc exp run -S train.num_processes=2 train", checkout)
    assert "train.num_processes = 2: accelerate launch --num_processes 2" in out
    assert json.loads((checkout / "metrics/train.json").read_text())["world_size"] == 2
    activated("accelerate launch --multi_gpu --num_processes 2 -m stages.train --params params.yaml "
              "--data-dir data/formatted --base-model models/base --out-dir models/finetuned "
              "--checkpoint-dir models/checkpoints --metrics metrics/train.json --live-dir metrics/train "
              "--record metrics/record/train.json", checkout)
    metrics = json.loads((checkout / "metrics/train.json").read_text())
    assert (metrics["world_size"], metrics["effective_batch_size"]) == (2, 4)  # 2 processes x 2 rows x 1 micro-batch


@pytest.mark.integration
def test_demo_help_and_experiments(checkout, monkeypatch):
    monkeypatch.setenv("DEMO_ARGS", "--set model.source=tiny --set train.max_steps=2 --set eval.limit=3 --set eval.base_limit=2 "
                       "--set eval.max_new_tokens=4 --set eval.base_max_new_tokens=4 --set convert.limit=2")
    out = shell("make demo", checkout)
    assert "| fine-tuned, PyTorch | " in out and "| .litertlm, as an app calls it | " in out and "| total |" in out
    assert list((checkout / "demo").rglob("*.litertlm"))
    helped = shell("make help", checkout)
    assert "demo" in helped and "test-integration" in helped
    table = shell("make experiments", checkout)
    assert "demo-" in table and all(len(line) <= 80 for line in table.splitlines())
    assert shell("make experiments SORT=exact", checkout).count("demo-") == table.count("demo-")
    shown = activated("dvc exp show --md --only-changed --drop '^(?!(data|model|format|train|eval|convert)\\.)' --keep '^Experiment$|^exact_match_finetuned(_n|_ci_low|_ci_high)?$|^exact_match_litertlm_app(_ci_low|_ci_high)?$|^runtime_seconds$'", checkout)
    assert "exact_match_finetuned" in shown and "| Experiment" in shown


@pytest.mark.integration
def test_sweep_of_your_own_grid_and_applying_an_experiment(tmp_path):
    """In a clone of its own, as the README's Tuning section starts: the sweep's experiments run the pipeline up to
    eval; `make apply` brings one's params and outputs into the workspace."""
    repo = user_checkout(tmp_path, QUICK_PIPELINE)
    (repo / "my_grid.yaml").write_text(MY_GRID)
    out = shell("make sweep GRID=my_grid.yaml", repo)
    assert "| sweep-fp32-detach-lr1e-3 |" in out
    out = shell("make apply EXP=sweep-fp32-detach-lr1e-3", repo)
    assert "validation_rows: 4" in (repo / "params.yaml").read_text()
    assert json.loads((repo / "metrics/train.json").read_text())["steps"] == 2 and (repo / "models/finetuned").is_dir()
    # its experiment ran up to eval: no bundle (plain `dvc exp apply` stops with "Checkout failed ... models/litertlm")
    assert "did not run the stages that make models/litertlm: `dvc repro` makes them" in out


@pytest.mark.integration
@pytest.mark.parametrize("command", sorted(EXPANDED))
def test_commands_needing_more_than_a_test_has_expand_as_written(checkout, command):
    why, fragment = EXPANDED[command]
    out = shell(command.replace("make ", "make -n -B ", 1), checkout)
    assert fragment in out, f"{command}: `make -n` printed no {fragment!r}:\n{out}"
