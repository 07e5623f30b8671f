"""Batched greedy generation with the KV cache, shared by eval, predict and convert.

    from pipeline.generate import load_model, generate_texts
    model, tokenizer = load_model("models/finetuned")
    texts = generate_texts(model, tokenizer, prompts, max_new_tokens=128, batch_size=16)

No files are written here. Prompts are FunctionGemma prompts as
`functiongemma.render_prompt` writes them: they already begin with the literal
`<bos>`, so they are tokenized without adding special tokens (one `<bos>`, not two).

How a batch runs: prompts are sorted by token length (longest first, so the
memory peak shows at once and each batch holds similar lengths). Each prompt
is prefilled on its own, unpadded, keeping logits for its last position only
(the 262k-word output layer over every prompt position would cost more than
the rest of the model); on a CPU this is cheaper per row than a padded batch,
and it is exactly the computation of a one-prompt run. Its keys and values go,
left-padded, into one preallocated KV cache for the batch, and decoding runs
one greedy token per row per step; position ids count real tokens only, so a
padded row sees the positions it would see alone. A row leaves the batch (and
the cache) as soon as it emits a stop token: `<start_function_response>`,
`<end_of_turn>` or `<eos>`.

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

    @property
    def new_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)


def pick_device(device: str | None = None) -> str:
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(device: str):
    """float32 on a CPU (the weights' own precision: the same numbers as any other
    float32 run of the model); bfloat16 on a GPU that has it (Gemma 3 overflows
    in float16), else float32."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


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


def load_model(path: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """Load a Hugging Face model folder and its tokenizer for inference.

    Returns (model, tokenizer); the model is in eval mode on `device` (default:
    the GPU when there is one, else the CPU) in the dtype `pick_dtype` chooses.
    A missing folder, or one that is not a model folder, is a UserError.
    """
    path = check_model_folder(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = pick_device(device)
    dtype = pick_dtype(device)
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


def greedy_batch(model, prompts: list[list[int]], *, max_new_tokens: int, stop_ids: list[int]) -> list[list[int]]:
    """Greedy continuation ids of each prompt, decoded together through one KV cache.

    Each prompt is prefilled on its own, unpadded (the same computation as
    running it alone, and on a CPU faster per row than a padded batch); its keys
    and values are copied, left-padded, into one batch cache, and decoding runs
    one token per live row per step. Each returned list ends with its stop id,
    or has max_new_tokens ids.
    """
    import torch

    device = model.device
    batch, width = len(prompts), max(len(p) for p in prompts)
    capacity = width + max_new_tokens
    cache = new_cache(model, capacity)
    attention = torch.zeros((batch, capacity), dtype=torch.long, device=device)
    first = []
    for row, ids in enumerate(prompts):
        start = width - len(ids)
        alone = new_cache(model, len(ids))
        out = model(input_ids=torch.tensor([ids], device=device), position_ids=torch.arange(len(ids), device=device)[None],
                    past_key_values=alone, use_cache=True, logits_to_keep=1)
        first.append(out.logits[0, -1, :].argmax(-1))
        for layer, own in zip(cache.layers, alone.layers):
            if not layer.is_initialized:
                shape = (batch, *own.keys.shape[1:2], capacity, own.keys.shape[-1])
                layer.lazy_initialization(own.keys.new_zeros(shape), own.values.new_zeros(shape))
            layer.keys[row, :, start:width] = own.keys[0]
            layer.values[row, :, start:width] = own.values[0]
        attention[row, start:width] = 1
        del alone, out
    for layer in cache.layers:
        layer.length = width
    next_ids = torch.stack(first)
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
    return generated


def generate(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int, progress: bool = True) -> Generation:
    """Greedy continuations of every prompt (see the module docstring), with counts and timing."""
    import torch
    from tqdm import tqdm

    if max_new_tokens < 1 or batch_size < 1:
        raise ValueError("max_new_tokens and batch_size must be at least 1")
    started = time.perf_counter()
    encoded = encode_prompts(tokenizer, prompts)
    stop_ids = stop_token_ids(tokenizer)
    token_ids: list[list[int]] = [[] for _ in prompts]
    bar = tqdm(total=len(prompts), unit="ex", desc="generate", disable=not progress, dynamic_ncols=True)
    new_tokens = 0
    with torch.inference_mode(), bar:
        for batch in length_sorted_batches([len(ids) for ids in encoded], batch_size):
            outputs = greedy_batch(model, [encoded[i] for i in batch], max_new_tokens=max_new_tokens, stop_ids=stop_ids)
            for i, ids in zip(batch, outputs):
                token_ids[i] = ids
                new_tokens += len(ids)
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{new_tokens / max(time.perf_counter() - started, 1e-9):.1f}")
    stop_set = set(stop_ids)
    texts = [tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) for ids in token_ids]
    stopped = [bool(ids) and ids[-1] in stop_set for ids in token_ids]
    return Generation(texts=texts, token_ids=token_ids, stopped=stopped,
                      prompt_tokens=[len(ids) for ids in encoded], seconds=time.perf_counter() - started)


def generate_texts(model, tokenizer, prompts: list[str], *, max_new_tokens: int, batch_size: int, progress: bool = True) -> list[str]:
    """The generated continuation text of each prompt, in input order (see `generate`)."""
    return generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, progress=progress).texts
