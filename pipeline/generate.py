"""Batched greedy generation with the KV cache, shared by eval and predict.

    from pipeline.generate import load_model, generate
    model, tokenizer = load_model("models/finetuned")                 # precision "auto" (see load_model)
    result = generate(model, tokenizer, prompts, max_new_tokens=128, batch_size=16)
    result.texts, result.prefill_seconds, result.decode_seconds

No files are written here. Prompts are FunctionGemma prompts as
`functiongemma.render_prompt` writes them: they already begin with the literal
`<bos>`, so they are tokenized without adding special tokens (one `<bos>`, not two).

How a batch runs: prompts are sorted by token length (longest first, so the
memory peak shows at once and each batch holds similar lengths). They are
prefilled `prefill_batch` at a time, keeping logits for the last position only
(the 262k-word output layer over every prompt position would cost more than the
rest of the model): one at a time unpadded (on a CPU this is as fast per row as
a padded batch and exactly the computation of a one-prompt run), or several
together, left-padded with an attention mask (what a GPU needs to be busy).
Their keys and values go, left-padded, into one preallocated KV cache for the
batch, and decoding runs one greedy token per row per step; position ids count
real tokens only, so a padded row sees the positions it would see alone. A row
leaves the batch (and the cache) as soon as it emits a stop token:
`<start_function_response>`, `<end_of_turn>` or `<eos>`.

Each returned text is the decoded continuation with special tokens kept (the
parser needs `<start_function_call>` and friends), ending with the stop token
that ended it; a text without a stop token at its end ran out of
`max_new_tokens`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import functiongemma as fg
from pipeline.common import UserError

log = logging.getLogger("generate")


@dataclass(frozen=True)
class Generation:
    """What one `generate` call produced, in the order the prompts came in."""

    texts: list[str]  # decoded continuations, special tokens kept, ending at the first stop token
    token_ids: list[list[int]]  # the generated ids (stop token included when one came)
    stopped: list[bool]  # True when a stop token ended the row, False when max_new_tokens did
    prompt_tokens: list[int]  # prompt length of each row, tokens
    seconds: float  # wall time of the whole call
    prefill_seconds: float = 0.0  # of which prefilling the prompts
    decode_seconds: float = 0.0  # of which decoding (one token per live row per step)

    @property
    def new_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)


def pick_device(device: str | None = None) -> str:
    """The device given, else the GPU when there is one, else the CPU."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def auto_prefill_batch(device: str) -> int:
    """Prompts prefilled together: one on a CPU (measured no faster padded, bench/RESULTS.md), 8 on a GPU."""
    return 8 if str(device).startswith("cuda") else 1


def check_model_folder(path: str | Path) -> Path:
    """The folder as a Path, or a UserError saying how to get one (cheap: no model is loaded)."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(
            f"model folder {path} does not exist: build it first (`dvc repro train` writes models/finetuned, "
            "`dvc repro fetch` models/base) or pass the path of a Hugging Face model folder"
        )
    if not (path / "config.json").exists():
        raise UserError(f"{path} is not a Hugging Face model folder (no config.json): pass the folder that holds config.json and *.safetensors")
    return path


def load_model(path: str | Path, device: str | None = None, precision: str = "auto") -> tuple[Any, Any]:
    """Load a Hugging Face model folder and its tokenizer for inference.

    Returns (model, tokenizer); the model is in eval mode on `device` (default: the GPU when there
    is one, else the CPU), its weights in the dtype `pipeline.hardware.inference_dtype` picks for
    `precision` (auto: bf16 where the device computes it natively, else float32). A missing
    folder, or one that is not a model folder, is a UserError.
    """
    path = check_model_folder(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipeline.hardware import inference_dtype

    device = pick_device(device)
    dtype = inference_dtype(precision, device)
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    model.to(device).eval()
    log.info("loaded %s on %s as %s in %.1f s", path, device, str(dtype).removeprefix("torch."), time.perf_counter() - started)
    return model, tokenizer


def stop_token_ids(tokenizer) -> list[int]:
    """Ids of `<start_function_response>`, `<end_of_turn>`, `<eos>` (50, 106, 1 in Gemma 3)."""
    ids = [tokenizer.convert_tokens_to_ids(token) for token in fg.STOP_TOKENS]
    if any(i is None or i == tokenizer.unk_token_id for i in ids):
        raise UserError(
            f"the tokenizer does not know the stop tokens {', '.join(fg.STOP_TOKENS)}: "
            "use a model folder written by the fetch or train stage (FunctionGemma tokenizer)"
        )
    return ids


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    """Token ids of each prompt, with exactly one leading <bos> (the prompt's own)."""
    bos = tokenizer.bos_token_id
    encoded = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        if not ids or ids[0] != bos or (len(ids) > 1 and ids[1] == bos):
            raise ValueError(
                f"prompt {i} must start with exactly one {tokenizer.bos_token}: render it with functiongemma.render_prompt"
            )
        encoded.append(ids)
    return encoded


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, longest first (stable for ties)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def _kv_buffer_class():
    """KVBuffer, defined on first use so importing this module stays free of torch/transformers."""
    global KVBuffer
    if "KVBuffer" in globals():
        return KVBuffer
    from transformers.cache_utils import DynamicLayer

    class KVBuffer(DynamicLayer):
        """One layer's keys and values in a buffer sized once for prompt + budget.

        transformers' DynamicLayer concatenates the whole cache at every step (a
        copy of every row's keys and values per token); this writes in place.
        Sliding-window layers keep every token as well: the model's
        sliding-window attention mask, not the cache, limits what they see.
        """

        is_sliding = False

        def __init__(self, capacity: int):
            super().__init__()
            self.capacity, self.length = capacity, 0

        def lazy_initialization(self, key_states, value_states) -> None:
            batch, heads, _, dim = key_states.shape
            self.dtype, self.device = key_states.dtype, key_states.device
            self.keys = key_states.new_zeros((batch, heads, self.capacity, dim))
            self.values = value_states.new_zeros((batch, heads, self.capacity, value_states.shape[-1]))
            self.is_initialized = True

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"KV buffer full ({self.capacity} tokens)")
            self.keys[:, :, self.length : end] = key_states
            self.values[:, :, self.length : end] = value_states
            self.length = end
            return self.keys[:, :, :end], self.values[:, :, :end]

        def get_seq_length(self) -> int:
            return self.length

        def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
            return self.length + query_length, 0

        def batch_select_indices(self, indices) -> None:
            self.keys, self.values = self.keys[indices], self.values[indices]

    return KVBuffer


def new_cache(model, capacity: int):
    """An empty cache of KVBuffer layers for `capacity` tokens per row."""
    from transformers import Cache

    layer = _kv_buffer_class()
    return Cache(layers=[layer(capacity) for _ in range(model.config.get_text_config().num_hidden_layers)])


def prefill(model, prompts: list[list[int]], pad_id: int) -> tuple[Any, Any, Any, int]:
    """Prefill `prompts` in one forward, left-padded when their lengths differ. Returns (each row's first
    greedy token, their cache, the attention mask, the padded length). One prompt runs unpadded:
    exactly a one-prompt run."""
    import torch

    device = model.device
    span = max(len(ids) for ids in prompts)
    inputs = torch.tensor([[pad_id] * (span - len(ids)) + ids for ids in prompts], device=device)
    mask = torch.tensor([[0] * (span - len(ids)) + [1] * len(ids) for ids in prompts], device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # real tokens count from 0, as in a one-prompt run
    own = new_cache(model, span)
    padded = bool((mask == 0).any())
    out = model(input_ids=inputs, attention_mask=mask if padded else None, position_ids=positions,
                past_key_values=own, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1, :].argmax(-1), own, mask, span


def greedy_batch(model, prompts: list[list[int]], *, max_new_tokens: int, stop_ids: list[int], pad_id: int = 0,
                 prefill_batch: int = 1, clock: dict | None = None) -> list[list[int]]:
    """Greedy continuation ids of each prompt, decoded together through one KV cache.

    The prompts are prefilled `prefill_batch` at a time (see `prefill`); their keys and values are
    copied, left-padded, into one batch cache, and decoding runs one token per live row per step.
    Each returned list ends with its stop id, or has max_new_tokens ids. `clock`, when given,
    accumulates "prefill" and "decode" seconds.
    """
    import torch

    device = model.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    started = time.perf_counter()
    batch, width = len(prompts), max(len(p) for p in prompts)
    capacity = width + max_new_tokens
    cache = new_cache(model, capacity)
    attention = torch.zeros((batch, capacity), dtype=torch.long, device=device)
    first = []
    for lo in range(0, batch, max(1, prefill_batch)):
        group = prompts[lo : lo + max(1, prefill_batch)]
        tokens, own, mask, span = prefill(model, group, pad_id)
        first.append(tokens)
        for layer, part in zip(cache.layers, own.layers):
            if not layer.is_initialized:
                shape = (batch, *part.keys.shape[1:2], capacity, part.keys.shape[-1])
                layer.lazy_initialization(part.keys.new_zeros(shape), part.values.new_zeros(shape))
            layer.keys[lo : lo + len(group), :, width - span : width] = part.keys
            layer.values[lo : lo + len(group), :, width - span : width] = part.values
        attention[lo : lo + len(group), width - span : width] = mask
        del own
    for layer in cache.layers:
        layer.length = width
    next_ids = torch.cat(first)
    sync()
    decoding = time.perf_counter()
    # Real tokens count positions from 0 whatever the padding.
    next_pos = torch.tensor([len(p) for p in prompts], device=device)
    stops = torch.tensor(stop_ids, device=device)

    generated: list[list[int]] = [[] for _ in prompts]
    alive = list(range(batch))  # original row of each row still in the batch
    for step in range(max_new_tokens):
        for row, token in zip(alive, next_ids.tolist()):
            generated[row].append(token)
        done = torch.isin(next_ids, stops)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            attention, next_ids, next_pos = attention[keep], next_ids[keep], next_pos[keep]
            alive = [alive[i] for i in keep.tolist()]
        attention[:, width + step] = 1
        out = model(input_ids=next_ids[:, None], attention_mask=attention[:, : width + step + 1],
                    position_ids=next_pos[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1)
        next_ids = out.logits[:, -1, :].argmax(-1)
        next_pos = next_pos + 1
    sync()
    if clock is not None:
        clock["prefill"] = clock.get("prefill", 0.0) + decoding - started
        clock["decode"] = clock.get("decode", 0.0) + time.perf_counter() - decoding
    return generated


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int, prefill_batch: int = 0,
             progress: bool = True) -> Generation:
    """Greedy continuations of every prompt (see the module docstring), with counts and timing.
    `prefill_batch` 0 picks `auto_prefill_batch` for the model's device."""
    import torch
    from tqdm import tqdm

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    prefill_batch = prefill_batch or auto_prefill_batch(model.device.type)
    started = time.perf_counter()
    encoded = encode_prompts(tokenizer, prompts)
    stop_ids = stop_token_ids(tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    token_ids: list[list[int]] = [[] for _ in prompts]
    bar = tqdm(total=len(prompts), unit="ex", desc="generate", disable=not progress, dynamic_ncols=True)
    new_tokens, clock = 0, {}
    with torch.inference_mode(), bar:
        for batch in length_sorted_batches([len(ids) for ids in encoded], batch_size):
            outputs = greedy_batch(model, [encoded[i] for i in batch], max_new_tokens=max_new_tokens, stop_ids=stop_ids,
                                   pad_id=pad_id, prefill_batch=prefill_batch, clock=clock)
            for i, ids in zip(batch, outputs):
                token_ids[i] = ids
                new_tokens += len(ids)
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{new_tokens / max(time.perf_counter() - started, 1e-9):.1f}")
    stop_set = set(stop_ids)
    texts = [tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) for ids in token_ids]
    stopped = [bool(ids) and ids[-1] in stop_set for ids in token_ids]
    return Generation(texts=texts, token_ids=token_ids, stopped=stopped, prompt_tokens=[len(ids) for ids in encoded],
                      seconds=time.perf_counter() - started, prefill_seconds=clock.get("prefill", 0.0),
                      decode_seconds=clock.get("decode", 0.0))


def generate_texts(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int, progress: bool = True) -> list[str]:
    """The generated continuation text of each prompt, in input order (see `generate`)."""
    return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                    progress=progress).texts
