"""``cut-cross-entropy``: Apple's fused linear cross-entropy (``cut_cross_entropy``), CPU path.

``cut_cross_entropy.linear_cross_entropy(e, c, targets, ignore_index, softcap, reduction,
shift, impl=...)`` takes the hidden states ``e`` (..., H), the classifier ``c`` (V, H) and
class-index targets (...). Its default ``impl='cce'`` is a Triton kernel for CUDA; on a CPU
machine this adapter runs ``impl='torch_compile'`` (``e @ c.T``, the softcap, then
``F.cross_entropy(logits.float(), ...)`` under ``torch.compile``), chosen by the option
``impl``: ``--adapter harness.adapters.cut_cross_entropy@impl=cce`` on a GPU.

What it has, and what this adapter composes around it:

- no bias: the bias is folded into the call exactly, ``e' = [e, 1]`` and ``c' = [c, b]``
  (one more column; ``e' c'^T = e c^T + b``), and the bias gradient is the last column of
  ``c'``'s;
- ``shift`` is a bool (a shift of 1): a case with a shift of 2 or more is ``unsupported``;
  with ``reduction='none'`` it returns T - 1 positions per sequence, which this adapter puts
  in front of a 0 for the last position (the loss keeps its shape, docs/kernel-features.md);
- no class weights, label smoothing, logit scale or z-loss (declared).

Install it beside torch (it imports triton at import time, also on a CPU machine)::

    pip install cut-cross-entropy triton
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.adapters import Adapter, LinearCallInputs, LinearOutput, Unsupported
from harness.adapters.torch_ce import to_numpy, torch_dtype


class CutCrossEntropy(Adapter):
    name = "cut-cross-entropy"
    description = "cut_cross_entropy.linear_cross_entropy (fused linear cross-entropy)"
    supports = frozenset({"fused_linear", "softcap", "shift"})
    unsupported = frozenset({"weight", "label_smoothing"})
    unsupported_source = "cut-cross-entropy has no class weights or label smoothing"

    def __init__(self, impl: str = "torch_compile", device: str = "cpu") -> None:
        self._impl = impl
        self._device = device

    def load(self) -> None:
        import cut_cross_entropy  # noqa: F401  (ImportError: not installed here)
        import torch

        # torch_compile's function is compiled with fullgraph=True for each dtype, reduction
        # and softcap it meets; a run meets more than dynamo's default limit of 8, and past
        # it every call raises FailOnRecompileLimitHit
        limit = torch._dynamo.config.recompile_limit
        torch._dynamo.config.recompile_limit = max(limit, 256)

    def version(self) -> str:
        from importlib.metadata import version

        return f"cut-cross-entropy {version('cut-cross-entropy')} (impl={self._impl})"

    def device(self) -> str:
        return self._device

    def run_linear(self, inputs: LinearCallInputs) -> LinearOutput:
        import torch
        from cut_cross_entropy import linear_cross_entropy

        if inputs.shift > 1:
            raise Unsupported(f"shift={inputs.shift}: cut-cross-entropy shifts by 1 only")
        td = torch_dtype(inputs.dtype)
        want = inputs.want_grad

        def tensor(a: np.ndarray) -> Any:
            return torch.from_numpy(np.array(a, order="C")).to(device=self._device, dtype=td)

        e = tensor(inputs.hidden).requires_grad_(want)
        c = tensor(inputs.classifier).requires_grad_(want)
        b = None if inputs.bias is None else tensor(inputs.bias).requires_grad_(want)
        e_in, c_in = e, c
        if b is not None:  # exact: a column of ones times the bias
            e_in = torch.cat([e, torch.ones_like(e[..., :1])], dim=-1)
            c_in = torch.cat([c, b[:, None]], dim=1)
        t = torch.from_numpy(np.array(inputs.target, order="C")).to(self._device)
        loss = linear_cross_entropy(
            e_in,
            c_in,
            t,
            ignore_index=inputs.ignore_index,
            softcap=inputs.softcap,
            reduction=inputs.reduction,
            shift=bool(inputs.shift),
            impl=self._impl,
        )
        if inputs.reduction == "none" and inputs.shift:
            loss = torch.cat([loss, torch.zeros_like(loss[..., :1])], dim=-1)
        loss = loss.to(td)
        out = LinearOutput(loss=to_numpy(loss, inputs.dtype))
        if want:
            go = inputs.grad_output
            upstream = torch.ones_like(loss) if go is None else tensor(go)
            wrt = [x for x in (e, c, b) if x is not None]
            grads = torch.autograd.grad(
                loss, wrt, grad_outputs=upstream, allow_unused=True, materialize_grads=True
            )
            out.grad_hidden = to_numpy(grads[0], inputs.dtype)
            out.grad_classifier = to_numpy(grads[1], inputs.dtype)
            if b is not None:
                out.grad_bias = to_numpy(grads[2], inputs.dtype)
        return out
