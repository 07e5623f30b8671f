"""This machine's matmul rate and a Gemma 3 model's FLOPs: the limit the benchmarks measure against.

    from flops import matmul_rate, forward_flops
    rate = matmul_rate("cpu", torch.float32)                 # FLOP/s of a large dense matmul, measured now
    forward_flops(config, tokens=576, context=288, head_positions=1)   # one forward over 576 tokens

Achieved FLOP/s = the model FLOPs a recipe must do (counted here, not the extra work a recipe may
waste, such as the output layer over prompt positions) divided by the seconds it took; its share of
`matmul_rate` is the CPU counterpart of a GPU's model FLOPs utilisation (MFU).
"""

from __future__ import annotations

import time


def matmul_rate(device: str, dtype, size: int | None = None, seconds: float = 2.0) -> float:
    """Best FLOP/s of `size` x `size` matmuls in `dtype` on `device` over about `seconds` (warm-up first).
    Default size: 2048 on a CPU (large enough for full vector units, small enough to time in 2 s), 8192 on a GPU."""
    import torch

    size = size or (8192 if device == "cuda" else 2048)
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, deadline = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def body_parameters(config) -> int:
    """Weights every token passes through (attention projections and MLP of every layer; not the embedding)."""
    attention = config.hidden_size * config.head_dim * 2 * (config.num_attention_heads + config.num_key_value_heads)
    return config.num_hidden_layers * (attention + 3 * config.hidden_size * config.intermediate_size)


def attention_flops(config, tokens: int, context: float) -> float:
    """Scores and weighted sum (QK^T and AV) for `tokens` queries that each see `context` keys on average,
    capped at the sliding window on sliding layers."""
    total = 0.0
    for kind in config.layer_types:
        seen = context if kind == "full_attention" else min(context, config.sliding_window)
        total += 2 * 2 * config.num_attention_heads * config.head_dim * seen * tokens
    return total


def forward_flops(config, tokens: int, context: float, head_positions: int) -> float:
    """FLOPs of one forward over `tokens` tokens (mean attended context `context`), with the 262k-word
    output layer computed at `head_positions` positions only."""
    return (2 * body_parameters(config) * tokens + attention_flops(config, tokens, context)
            + 2 * config.hidden_size * config.vocab_size * head_positions)


def prefill_flops(config, prompt_lengths: list[int]) -> float:
    """Prefilling each prompt: causal attention (mean context half the prompt), logits of the last position only."""
    return sum(forward_flops(config, n, n / 2, 1) for n in prompt_lengths)


def decode_flops(config, prompt_lengths: list[int], generated: list[int]) -> float:
    """Decoding: each new token a one-token forward over its prompt and the tokens before it, with logits."""
    total = 0.0
    for prompt, new in zip(prompt_lengths, generated):
        for step in range(new):
            total += forward_flops(config, 1, prompt + step, 1)
    return total


def train_flops_per_token(config, mean_length: float, completion_fraction: float, lora: bool) -> float:
    """Training FLOPs per real token that any recipe must do: the forward (output layer on completion
    tokens only) and the backward, 2x the forward for full fine-tuning (gradients of activations and
    of weights) and 1x for LoRA (gradients of activations only; the adapters' own are negligible)."""
    forward = forward_flops(config, 1, mean_length / 2, completion_fraction)
    return forward * (2 if lora else 3)
