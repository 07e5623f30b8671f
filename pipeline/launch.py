"""Several training processes from one stage command: the train stage relaunching itself under accelerate.

    from pipeline.launch import launched_processes, launch_command
    launched_processes()                       # None here; N inside a run `accelerate launch` started
    launch_command(2, "stages.train", argv)    # [python, -m, accelerate.commands.launch, ..., -m, stages.train, ...]

`train.num_processes: N` (N > 1) makes `dvc repro` / `dvc exp run` train on N processes: the stage's
command (`python -m stages.train ...`, as dvc.yaml runs it) starts `accelerate launch` with N processes of
itself and waits for them, so dvc.lock records the run as for one process. Launched that way (or by
`accelerate launch` typed by hand), the processes see torchrun's WORLD_SIZE and do not launch again.

With an accelerate config file (`accelerate config`: FSDP, DeepSpeed, which GPUs...), the launch follows it
and N replaces its process count. Without one it is plain DDP (`--multi_gpu`): one process per GPU, and on a
CPU-only machine N processes joined over gloo (accelerate's own multi-CPU mode needs MPI).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pipeline.common import UserError


def launched_processes() -> int | None:
    """The number of processes of the distributed run this process belongs to, or None outside one."""
    world = os.environ.get("WORLD_SIZE")
    return int(world) if world and world.isdigit() else None


def accelerate_config_file() -> Path | None:
    """The accelerate config `accelerate launch` would read (ACCELERATE_CONFIG_FILE or its default path), if any."""
    from accelerate.commands.config import default_config_file

    path = Path(os.environ.get("ACCELERATE_CONFIG_FILE") or default_config_file)
    return path if path.is_file() else None


def check_devices(num_processes: int) -> None:
    """On a GPU machine, one process per GPU at most: more would share a GPU and run out of memory."""
    import torch

    if torch.cuda.is_available() and num_processes > torch.cuda.device_count():
        raise UserError(f"train.num_processes: {num_processes}, but this machine has {torch.cuda.device_count()} GPU(s): "
                        f"set it to {torch.cuda.device_count()} or fewer")


def launch_command(num_processes: int, module: str, argv: list[str], config: Path | None = None) -> list[str]:
    """`accelerate launch` of `python -m module argv` on num_processes processes, with or without a config file."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes),
              "--num_machines", "1"]
    if config is not None:
        launch += ["--config_file", str(config)]
    else:  # no config: DDP; precision and compilation are the stage's own settings (train.precision, torch_compile)
        launch += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*launch, "-m", module, *argv]
