"""Which device and number format a stage computes in: the one place that decides it.

    from pipeline.hardware import detect_device, native_bf16, train_precision, inference_dtype
    device = detect_device()                           # "cuda" | "mps" | "cpu"
    train_precision("auto", device)                    # "bf16" | "fp16" | "fp32" (autocast over fp32 weights)
    inference_dtype("auto", device)                    # torch.bfloat16 | torch.float32 (weights and compute)

bf16 counts as native where the hardware computes bf16 matrix products directly: a GPU that
reports bf16 support, a CPU with AVX512-BF16 or AMX (oneDNN runs bf16 matmuls there at about
twice the float32 rate). Elsewhere bf16 is emulated and slower than float32, so `auto` never picks it.
"""

from __future__ import annotations

from pipeline.common import UserError


def detect_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def native_bf16(device: str) -> bool:
    """Does this device compute bf16 matmuls natively (so bf16 is faster, not emulated)?"""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    if device == "cpu":
        try:
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:  # pragma: no cover - a torch without these probes
            return False
    return False


def resolve_precision(requested: str, device: str, bf16_native: bool, key: str = "train.precision") -> str:
    """auto: bf16 where the device computes it natively, fp32 elsewhere; an impossible request is one sentence."""
    kind = device.split(":")[0]
    if requested == "auto":
        return "bf16" if kind in ("cuda", "cpu") and bf16_native else "fp32"
    if requested == "fp16" and kind != "cuda":
        raise UserError(f"{key}: fp16 needs a CUDA GPU and this run is on {device}; use auto, bf16 or fp32")
    if requested == "bf16" and kind == "cuda" and not bf16_native:
        raise UserError(f"{key}: this GPU has no bf16 support; use auto, fp16 or fp32")
    return requested


def train_precision(requested: str, device: str) -> str:
    """The autocast precision of training (weights stay float32)."""
    return resolve_precision(requested, device, native_bf16(device))


def inference_dtype(requested: str, device: str, key: str = "eval.precision"):
    """The torch dtype a model is loaded in for generation (Gemma 3 overflows in float16: never fp16)."""
    import torch

    if requested == "fp16":
        raise UserError(f"{key}: Gemma 3 overflows in float16; use auto, bf16 or fp32")
    precision = resolve_precision(requested, device, native_bf16(device), key)
    return torch.bfloat16 if precision == "bf16" else torch.float32
