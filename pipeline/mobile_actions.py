"""The Mobile Actions task's fixed parts, read from pipeline/mobile_actions.json (their one source).

    from pipeline import mobile_actions
    mobile_actions.TOOLS                      # the seven tool declarations, as the data set's rows declare them
    mobile_actions.INSTRUCTION                # FunctionGemma's standard instruction line (no trailing newline)
    mobile_actions.developer_text(now)        # the developer turn of a Mobile Actions row for that moment

data/sample/generate.py (standard library only) reads the same JSON file directly.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

_DATA: dict[str, Any] = json.loads(Path(__file__).with_name("mobile_actions.json").read_text(encoding="utf-8"))

TOOLS: list[dict[str, Any]] = _DATA["tools"]
INSTRUCTION: str = _DATA["instruction"]
DEVELOPER_TEMPLATE: str = _DATA["developer_template"]


def developer_text(now: datetime, instruction: str = INSTRUCTION) -> str:
    """'Current date and time given in ... format: <now>\\nDay of week is <day>\\n<instruction>\\n'."""
    return DEVELOPER_TEMPLATE.format(now=f"{now:%Y-%m-%dT%H:%M:%S}", weekday=f"{now:%A}", instruction=instruction)
