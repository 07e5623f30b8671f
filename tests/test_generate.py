"""Batched greedy generation (pipeline/generate.py) on the tiny random Gemma 3 (and, marked slow, the real 270M)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipeline import functiongemma as fg
from pipeline.common import UserError
from pipeline.generate import encode_prompts, generate, generate_texts, length_sorted_batches, load_model

STOP_IDS = (50, 106, 1)  # <start_function_response>, <end_of_turn>, <eos>


@pytest.fixture(scope="module")
def tiny(tiny_base):
    return load_model(tiny_base, device="cpu")


@pytest.fixture(scope="module")
def prompts(formatted_sample) -> list[str]:
    """Prompts of mixed lengths: short hand-made ones and real rows (some over the 512-token sliding window)."""
    rows = [json.loads(line) for line in (formatted_sample / "eval.jsonl").read_text().splitlines()[:3]]
    longest = max((json.loads(line) for line in (formatted_sample / "eval.jsonl").read_text().splitlines()),
                  key=lambda r: len(r["prompt"]))
    return [
        fg.render_prompt([], [{"role": "user", "content": "hi"}]),
        rows[0]["prompt"],
        fg.render_prompt(rows[1]["tools"][:2], [{"role": "user", "content": "Turn on the flashlight"}]),
        longest["prompt"],
        rows[2]["prompt"],
    ]


def hf_greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> str:
    """Reference: transformers' own generate(), one prompt, no padding."""
    inputs = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=list(STOP_IDS))
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=False)


class ForcedStops:
    """The tiny model, but a row emits a stop token whenever its next position is a multiple of `every`.

    The stop depends only on the row's own position, so a row must stop at the
    same token whether it runs alone or in a padded batch.
    """

    def __init__(self, model, every: int):
        self.model, self.every = model, every
        self.calls = []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, *, input_ids, position_ids, **kwargs):
        out = self.model(input_ids=input_ids, position_ids=position_ids, **kwargs)
        self.calls.append(input_ids.shape[0])
        next_pos = position_ids[:, -1] + 1
        for row, pos in enumerate(next_pos.tolist()):
            if pos % self.every == 0:
                out.logits[row, -1, :] = -1e9
                out.logits[row, -1, STOP_IDS[(pos // self.every) % 3]] = 0.0
        return out


def test_prompts_keep_their_single_bos(tiny, prompts):
    _, tokenizer = tiny
    for ids, prompt in zip(encode_prompts(tokenizer, prompts), prompts):
        assert ids[0] == tokenizer.bos_token_id == 2 and ids[1] != 2
        assert ids == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with pytest.raises(ValueError, match="exactly one"):
        encode_prompts(tokenizer, ["<bos>" + prompts[0]])
    with pytest.raises(ValueError, match="exactly one"):
        encode_prompts(tokenizer, ["no bos here"])


def test_batches_are_sorted_by_length_longest_first():
    assert length_sorted_batches([5, 9, 1, 9, 3], 2) == [[1, 3], [0, 4], [2]]
    assert length_sorted_batches([], 4) == []


def test_mixed_length_batch_equals_one_at_a_time_and_transformers(tiny, prompts):
    model, tokenizer = tiny
    lengths = [len(ids) for ids in encode_prompts(tokenizer, prompts)]
    assert min(lengths) < 20 and max(lengths) > 512  # left padding of hundreds of tokens, past the sliding window
    batched = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=len(prompts), progress=False)
    for prompt, text in zip(prompts, batched.texts):
        assert generate_texts(model, tokenizer, [prompt], max_new_tokens=12, batch_size=1, progress=False) == [text]
        assert hf_greedy(model, tokenizer, prompt, 12) == text
    assert batched.prompt_tokens == lengths
    assert [len(ids) for ids in batched.token_ids] == [12] * len(prompts)  # a random model rarely stops
    assert batched.new_tokens == 12 * len(prompts) and batched.seconds > 0


def test_padded_batched_prefill_gives_the_texts_of_one_at_a_time(tiny, prompts):
    """The GPU path: prompts of 4 to 600+ tokens prefilled in one left-padded forward (padding past the
    512-token sliding window) continue exactly as when each is prefilled alone."""
    model, tokenizer = tiny
    alone = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=len(prompts), prefill_batch=1, progress=False)
    for group in (2, len(prompts)):
        together = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=len(prompts), prefill_batch=group,
                            progress=False)
        assert together.texts == alone.texts and together.token_ids == alone.token_ids
    assert 0 < alone.prefill_seconds and 0 < alone.decode_seconds
    assert alone.prefill_seconds + alone.decode_seconds <= alone.seconds
    forced = ForcedStops(model, 1000)
    generate(forced, tokenizer, prompts, max_new_tokens=2, batch_size=len(prompts), prefill_batch=len(prompts), progress=False)
    assert forced.calls[0] == len(prompts)  # one prefill forward for the whole batch


def test_rows_stop_at_their_first_stop_token_and_leave_the_batch(tiny, prompts):
    model, tokenizer = tiny
    every, budget = 7, 10
    forced = ForcedStops(model, every)
    result = generate(forced, tokenizer, prompts, max_new_tokens=budget, batch_size=len(prompts), progress=False)
    for ids, length, text, stopped in zip(result.token_ids, result.prompt_tokens, result.texts, result.stopped):
        expected = (-length) % every + 1  # the first generated position that is a multiple of `every`
        assert stopped and len(ids) == expected <= budget
        assert ids[-1] in STOP_IDS and not set(ids[:-1]) & set(STOP_IDS)
        assert text.endswith(tokenizer.convert_ids_to_tokens(ids[-1]))
    # Each prompt is prefilled alone, then decoded in one batch that shrinks as rows stop.
    n = len(prompts)
    decode = forced.calls[n:]
    assert forced.calls[:n] == [1] * n
    assert decode == sorted(decode, reverse=True) and decode[0] <= n and decode[-1] < decode[0]
    alone = [generate(ForcedStops(model, every), tokenizer, [p], max_new_tokens=budget, batch_size=1, progress=False)
             for p in prompts]
    assert [a.token_ids[0] for a in alone] == result.token_ids


def test_budget_ends_rows_that_never_stop(tiny, prompts):
    model, tokenizer = tiny
    result = generate(ForcedStops(model, every=1000), tokenizer, prompts[:2], max_new_tokens=3, batch_size=2, progress=False)
    assert [len(ids) for ids in result.token_ids] == [3, 3] and result.stopped == [False, False]


def test_order_and_batch_size_do_not_change_results(tiny, prompts):
    model, tokenizer = tiny
    reference = generate_texts(model, tokenizer, prompts, max_new_tokens=6, batch_size=len(prompts), progress=False)
    for batch_size in (1, 2, 3):
        assert generate_texts(model, tokenizer, prompts, max_new_tokens=6, batch_size=batch_size, progress=False) == reference
    reversed_texts = generate_texts(model, tokenizer, prompts[::-1], max_new_tokens=6, batch_size=2, progress=False)
    assert reversed_texts == reference[::-1]
    assert generate_texts(model, tokenizer, [], max_new_tokens=6, batch_size=2) == []


def test_missing_or_wrong_model_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "models" / "finetuned")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_model(tmp_path / "empty")


# ---------------------------------------------------------------- the real 270M (slow)


@pytest.fixture(scope="module")
def real_base(tmp_path_factory) -> Path:
    """The offline Gemma 3 270M as the fetch stage writes it (PIPELINE_GGUF_BASE reuses a built folder)."""
    ready = os.environ.get("PIPELINE_GGUF_BASE")
    if ready:
        return Path(ready)
    from stages.fetch import fetch_model
    from pipeline.params import load_params

    model = load_params("model", path=Path(__file__).resolve().parents[1] / "params.yaml")
    folder = tmp_path_factory.mktemp("base-gguf") / "base"
    fetch_model(type(model)(source="gguf", hub_repo=model.hub_repo, revision=model.revision, path="", tiny=model.tiny), folder)
    return folder


@pytest.mark.slow
def test_real_model_batch_equals_one_at_a_time(real_base, prompts):
    model, tokenizer = load_model(real_base, device="cpu")
    chosen = prompts[:4]  # 8 .. 750 tokens: heavy left padding
    batched = generate_texts(model, tokenizer, chosen, max_new_tokens=16, batch_size=4, progress=False)
    for prompt, text in zip(chosen, batched):
        assert hf_greedy(model, tokenizer, prompt, 16) == text
