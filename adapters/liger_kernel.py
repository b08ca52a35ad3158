"""``liger-kernel``: Liger-Kernel's fused linear cross-entropy (Triton, CUDA only). UNVERIFIED.

Written from Liger-Kernel's source (``liger_kernel.transformers.functional.
liger_fused_linear_cross_entropy(input, weight, target, bias, ce_weight, ignore_index,
lse_square_scale, label_smoothing, reduction, softcap, return_z_loss)``, 0.5 and later)
and never run: Liger needs a CUDA GPU and none was available when it was written
(docs/fused-linear.md, "Adapters"). Run it on a GPU machine with::

    python -m harness --adapter harness.adapters.liger_kernel --cases cases/fused_linear.yaml

Mapping: ``z_loss`` is ``lse_square_scale``; ``weight`` is ``ce_weight``; the gradient comes
from autograd (Liger computes it in the forward pass and scales it by the upstream
gradient). ``grad_output`` is declared unsupported: Liger's backward multiplies its stored
gradient by a scalar upstream gradient only. No logit scale; a shift is the caller's (the
targets are shifted here, as Hugging Face's ``ForCausalLMLoss`` does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.adapters import Adapter, LinearCallInputs, LinearOutput
from harness.adapters.torch_ce import to_numpy, torch_dtype


class LigerFusedLinear(Adapter):
    name = "liger-kernel"
    description = "liger_kernel fused linear cross-entropy (CUDA; unverified)"
    supports = frozenset({"fused_linear", "softcap", "z_loss", "return_z_loss", "shift"})
    unsupported = frozenset({"grad_output"})
    unsupported_source = "Liger's backward scales by a scalar upstream gradient only"

    def __init__(self, device: str = "cuda") -> None:
        self._device = device

    def load(self) -> None:
        import torch
        from liger_kernel.transformers.functional import (  # noqa: F401  (ImportError)
            liger_fused_linear_cross_entropy,
        )

        if not torch.cuda.is_available():
            raise RuntimeError("Liger-Kernel's Triton kernels need a CUDA GPU")

    def version(self) -> str:
        from importlib.metadata import version

        return f"liger-kernel {version('liger-kernel')}"

    def device(self) -> str:
        return self._device

    def run_linear(self, inputs: LinearCallInputs) -> LinearOutput:
        import torch
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

        td = torch_dtype(inputs.dtype)
        want = inputs.want_grad

        def tensor(a: np.ndarray | None, grad: bool = False) -> Any:
            if a is None:
                return None
            t = torch.from_numpy(np.array(a, order="C")).to(device=self._device, dtype=td)
            return t.requires_grad_(grad)

        h = tensor(inputs.hidden, want)
        w = tensor(inputs.classifier, want)
        b = tensor(inputs.bias, want)
        t = torch.from_numpy(np.array(inputs.target, order="C"))
        if inputs.shift:
            shifted = torch.full_like(t, inputs.ignore_index)
            shifted[..., : -inputs.shift] = t[..., inputs.shift :]
            t = shifted
        result = liger_fused_linear_cross_entropy(
            h.reshape(-1, h.shape[-1]),
            w,
            t.reshape(-1).to(self._device),
            bias=b,
            ce_weight=None if inputs.weight is None else tensor(inputs.weight).float(),
            ignore_index=inputs.ignore_index,
            lse_square_scale=inputs.z_loss,
            label_smoothing=inputs.label_smoothing,
            reduction=inputs.reduction,
            softcap=inputs.softcap,
            return_z_loss=inputs.return_z_loss,
        )
        loss, z_loss = result if isinstance(result, tuple) else (result, None)
        shape = tuple(inputs.target.shape) if inputs.reduction == "none" else ()
        loss = loss.reshape(shape)
        out = LinearOutput(loss=to_numpy(loss.to(td), inputs.dtype))
        if inputs.return_z_loss and z_loss is not None:
            out.z_loss = to_numpy(z_loss.reshape(shape).to(td), inputs.dtype)
        if want:
            wrt = [x for x in (h, w, b) if x is not None]
            grads = torch.autograd.grad(
                loss, wrt, torch.ones_like(loss), allow_unused=True, materialize_grads=True
            )
            out.grad_hidden = to_numpy(grads[0].reshape(h.shape), inputs.dtype)
            out.grad_classifier = to_numpy(grads[1], inputs.dtype)
            if b is not None:
                out.grad_bias = to_numpy(grads[2], inputs.dtype)
        return out
