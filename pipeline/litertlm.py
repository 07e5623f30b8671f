"""Running a `.litertlm` bundle in the LiteRT-LM runtime (`litert-lm-api`), the two ways it can be fed.

    from pipeline.litertlm import open_engine, run_prompts, run_conversations
    with open_engine(Path("models/litertlm/functiongemma-finetuned.litertlm")) as engine:
        raw = run_prompts(engine, prompts, max_new_tokens=128)            # our rendered prompts: measures the weights
        app = run_conversations(engine, rows, max_new_tokens=128)         # as an app calls it: what a phone user gets

- Raw prompt: a Session fed the prompt text we render (pipeline/functiongemma.py, without its `<bos>`,
  which the runtime adds as the bundle's start token); the answer is text, parsed by our parser.
- As an app calls it: `Engine.create_conversation(messages=..., tools=..., automatic_tool_calling=False)`
  then `send_message(user turn)`: the runtime renders the prompt with the bundle's prompt template and
  parses the calls itself. The bundles convert_litertlm writes carry pipeline/chat_template.jinja as that
  template (with `use_template_for_fc_format`, so tools reach it as JSON), which renders exactly what
  training saw; `rendered_prompt` shows what the runtime renders, for tests and for the log.
  A call the runtime cannot parse makes `send_message` raise; that answer counts as malformed.

Greedy decoding both ways (top-k 1). The runtime's XNNPACK weight cache, as large as the model, goes to
a temporary folder, never beside the bundle. No other I/O.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from pipeline import functiongemma as fg


@dataclass
class RuntimeStats:
    """Counts and times the runtime reported (its own benchmark figures) over a set of answers."""

    answers: int = 0
    seconds: float = 0.0  # wall time of all answers
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_tokens: int = 0
    decode_seconds: float = 0.0

    def add(self, info: Any) -> None:
        self.prefill_tokens += info.last_prefill_token_count
        self.decode_tokens += info.last_decode_token_count
        if info.last_prefill_tokens_per_second > 0:
            self.prefill_seconds += info.last_prefill_token_count / info.last_prefill_tokens_per_second
        if info.last_decode_tokens_per_second > 0:
            self.decode_seconds += info.last_decode_token_count / info.last_decode_tokens_per_second

    def figures(self, prefix: str) -> dict[str, float]:
        def rate(count: float, seconds: float) -> float:
            return round(count / seconds, 2) if seconds else 0.0

        return {f"{prefix}_examples_per_s": rate(self.answers, self.seconds),
                f"{prefix}_prefill_tokens_per_s": rate(self.prefill_tokens, self.prefill_seconds),
                f"{prefix}_decode_tokens_per_s": rate(self.decode_tokens, self.decode_seconds)}


@dataclass(frozen=True)
class AppAnswer:
    """What the runtime returned to an app for one conversation turn."""

    calls: list[fg.Call]
    text: str
    error: str = ""  # why the runtime failed on this turn (e.g. a call it could not parse)


@dataclass
class Engine:
    """An open runtime engine and the seconds it took to load the bundle."""

    engine: Any
    load_seconds: float


def runtime_threads(requested: int = 0) -> int:
    """CPU threads for the runtime: `requested`, or (0) one per core this process may run on. The runtime's
    own default (4 threads) oversubscribes a 2-core machine: 16 rows took 13.9 s with it, 11.8 s with 2."""
    if requested > 0:
        return requested
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def open_engine(bundle: Path, threads: int = 0) -> Iterator[Engine]:
    """Load the bundle on the CPU backend with `runtime_threads(threads)` threads (benchmark figures on); its
    weight cache lives in a temp folder."""
    import litert_lm

    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)
    with tempfile.TemporaryDirectory(prefix="litertlm-cache-") as cache_dir:
        started = time.perf_counter()
        engine = litert_lm.Engine(str(bundle), backend=litert_lm.Backend.CPU(thread_count=runtime_threads(threads)),
                                  cache_dir=cache_dir, enable_benchmark=True)
        try:
            yield Engine(engine, time.perf_counter() - started)
        finally:
            engine.close()


def runtime_prompt(prompt: str) -> str:
    """The prompt as a Session takes it: without the leading <bos>, which the runtime adds itself
    (the bundle's start token); passing it too would give the model two."""
    return prompt[len(fg.BOS):] if prompt.startswith(fg.BOS) else prompt


def run_prompts(engine: Engine, prompts: list[str], *, max_new_tokens: int, progress: bool = True) -> tuple[list[str], RuntimeStats]:
    """Greedy text of the runtime for each rendered prompt, one fresh session per prompt."""
    import litert_lm
    from tqdm import tqdm

    texts, stats = [], RuntimeStats()
    started = time.perf_counter()
    for prompt in tqdm(prompts, unit="row", desc="litert-lm raw prompt", disable=not progress, dynamic_ncols=True):
        session = engine.engine.create_session(apply_prompt_template=False,  # the prompt is already rendered
                                               sampler_config=litert_lm.SamplerConfig(top_k=1),
                                               max_output_tokens=max_new_tokens)
        try:
            session.run_prefill([runtime_prompt(prompt)])
            texts.append(session.run_decode().texts[0])
            stats.add(session.get_benchmark_info())
        finally:
            session.close()
    stats.answers, stats.seconds = len(prompts), time.perf_counter() - started
    return texts, stats


_TOOL_CLASS: Any = None


def declared_tool(declaration: dict) -> Any:
    """A row's tool declaration as the runtime's Python API takes it (a `litert_lm.Tool`): its description is
    the declaration itself, in the app's own key order, wrapped as {"type": "function", "function": ...} when
    bare. It is never executed here (automatic tool calling is off)."""
    global _TOOL_CLASS
    if _TOOL_CLASS is None:
        import litert_lm

        class DeclaredTool(litert_lm.Tool):
            def __init__(self, description: dict):
                self.description = description

            def get_tool_description(self) -> dict:
                return self.description

            def execute(self, param: Any) -> Any:
                raise RuntimeError("the pipeline does not execute tools")

        _TOOL_CLASS = DeclaredTool
    wrapped = declaration if isinstance(declaration.get("function"), dict) else {"type": "function", "function": declaration}
    return _TOOL_CLASS(wrapped)


def _conversation(engine: Engine, tools: list[dict], history: list[dict], *, max_new_tokens: int, constrained: bool):
    import litert_lm

    options: dict[str, Any] = {}
    if constrained:
        options["constrained_decoding_config"] = litert_lm.ConstrainedDecodingConfig(enable=True)
    return engine.engine.create_conversation(
        messages=history, tools=[declared_tool(t) for t in tools], automatic_tool_calling=False,
        sampler_config=litert_lm.SamplerConfig(top_k=1), max_output_tokens=max_new_tokens, **options)


def split_turn(messages: list[dict]) -> tuple[list[dict], dict]:
    """(history, last turn) of the messages before the answer: the app sends the last turn (the user's
    request, or a tool's result the model answers next); everything before it is the conversation so far."""
    if not messages or messages[-1].get("role") == "assistant":
        raise ValueError("the conversation must end with the turn the model answers (a user or tool message)")
    return list(messages[:-1]), messages[-1]


def answer_of(reply: dict) -> AppAnswer:
    """The runtime's reply JSON ({content: [{type: text, text}], tool_calls: [{function: {name, arguments}}]})."""
    content = reply.get("content")
    if isinstance(content, list):
        text = "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")
    else:
        text = content if isinstance(content, str) else ""
    try:
        calls = fg.calls_from_message(reply)
    except ValueError as err:
        return AppAnswer([], text.strip(), f"unreadable tool_calls: {err}")
    return AppAnswer(calls, text.strip())


def run_conversations(engine: Engine, rows: list[dict], *, max_new_tokens: int, constrained: bool = False,
                      progress: bool = True) -> tuple[list[AppAnswer], RuntimeStats]:
    """Each row's tools and messages as an app passes them, one fresh conversation per row."""
    import litert_lm
    from tqdm import tqdm

    answers, stats = [], RuntimeStats()
    started = time.perf_counter()
    label = "litert-lm app (constrained)" if constrained else "litert-lm app"
    # A call the model wrote that the runtime cannot parse comes back as a RuntimeError, kept in that row's answer
    # (and scored a miss); the runtime would also log it to stderr ("E0000 ... Failed to send message", a trace,
    # glog's "WARNING: Logging before InitGoogle()" first): only fatal runtime logging while the rows run, unless
    # PIPELINE_VERBOSE=1 asks for the runtime's reasons too.
    verbose = os.environ.get("PIPELINE_VERBOSE") == "1"
    litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR if verbose else litert_lm.LogSeverity.FATAL)
    try:
        for row in tqdm(rows, unit="row", desc=label, disable=not progress, dynamic_ncols=True):
            history, turn = split_turn(row["messages"])
            conversation = _conversation(engine, row["tools"], history, max_new_tokens=max_new_tokens, constrained=constrained)
            try:
                answers.append(answer_of(conversation.send_message(turn).to_json()))
                stats.add(conversation.get_benchmark_info())
            except RuntimeError as err:  # the runtime could not parse the call it generated (or failed otherwise)
                answers.append(AppAnswer([], "", f"runtime error: {err}"))
            finally:
                conversation.close()
    finally:
        litert_lm.set_min_log_severity(litert_lm.LogSeverity.ERROR)  # open_engine's level
    stats.answers, stats.seconds = len(rows), time.perf_counter() - started
    return answers, stats


def rendered_prompt(engine: Engine, tools: list[dict], messages: list[dict]) -> str:
    """The prompt text (without <bos>) the runtime renders for an app's conversation ending in a user turn."""
    history, turn = split_turn(messages)
    conversation = _conversation(engine, tools, history, max_new_tokens=1, constrained=False)
    try:
        return conversation.render_message_to_string(turn)
    finally:
        conversation.close()
