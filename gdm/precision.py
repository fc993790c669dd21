"""True fp32 arithmetic for the numbers the paper reports (docs/CONTRACTS.md, Precision of evaluation).

torch lets cuDNN convolutions run fp32 tensors in TF32 by default (a 10-bit mantissa, relative rounding
≈ 5e-4), and a user or library may allow it for CUDA matmuls too. For the bias-free 80×80 UNet that takes the
homogeneity error ‖f(ay) − a f(y)‖ / ‖a f(y)‖ from ≈ 4e-7 to ≈ 5e-4, and the same error enters the Jacobian
(eigenvalues, paper Figure 3), the PSNR curves and every sampler step. `true_fp32()` turns TF32 off for cuDNN
convolutions and matmuls (CUDA, and oneDNN on the CPU) while evaluation runs, and puts the previous settings
back on exit; `Precision` is what results.json records.

Only torch's per-operator `fp32_precision` settings are written, plus the legacy matmul precision when it
allows TF32: torch refuses a cuBLAS matmul whose legacy (`set_float32_matmul_precision`) and new
(`backends.cuda.matmul.fp32_precision`) settings disagree, so both are set together.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

IEEE = "ieee"  # full fp32 arithmetic (torch's name); the alternative is "tf32"
# (backend module, operator) pairs whose fp32 precision true_fp32 sets: cuDNN convolutions, cuBLAS matmuls,
# oneDNN (CPU) matmuls and convolutions
OPERATORS = (("cudnn", "conv"), ("cuda", "matmul"), ("mkldnn", "matmul"), ("mkldnn", "conv"))


@dataclass(frozen=True)
class Precision:
    """The arithmetic an evaluation ran in, as results.json records it."""

    matmul: str  # CUDA matmul fp32 precision: "ieee" (true fp32) or "tf32"
    conv: str  # cuDNN convolution fp32 precision: "ieee" or "tf32"
    dtype: str  # dtype of the weights and images, e.g. "float32"

    def record(self) -> dict[str, str]:
        return asdict(self)


def _backend(name: str, op: str):
    return getattr(getattr(torch.backends, name), op)


def fp32_precision(name: str, op: str) -> str:
    """torch's fp32 precision of one operator ("ieee", "tf32", "bf16" or "none": inherited, i.e. the default)."""
    return _backend(name, op).fp32_precision


def current_precision(dtype: torch.dtype = torch.float32) -> Precision:
    """The settings in force now, for computations in `dtype`."""
    dtype_name = str(dtype).removeprefix("torch.")
    return Precision(fp32_precision("cuda", "matmul"), fp32_precision("cudnn", "conv"), dtype_name)


def _legacy_matmul_precision() -> str | None:
    """torch.get_float32_matmul_precision(), or None where torch finds the legacy and new settings mixed."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


@contextmanager
def true_fp32() -> Iterator[None]:
    """No TF32 in cuDNN convolutions or matmuls inside the block; the previous settings are restored on exit."""
    legacy = _legacy_matmul_precision()
    saved = {operator: fp32_precision(*operator) for operator in OPERATORS}
    try:
        if legacy not in (None, "highest"):  # keeps the legacy setting consistent with the new one
            torch.set_float32_matmul_precision("highest")
        for name, op in OPERATORS:
            _backend(name, op).fp32_precision = IEEE
        yield
    finally:
        if legacy not in (None, "highest"):
            torch.set_float32_matmul_precision(legacy)
        for (name, op), value in saved.items():
            _backend(name, op).fp32_precision = value
