"""``torch`` and ``torch-module``: PyTorch's own cross-entropy, the reference semantics.

``torch`` calls ``torch.nn.functional.cross_entropy``; ``torch-module`` calls
``torch.nn.CrossEntropyLoss(...)(input, target)``. The gradient w.r.t. the
logits comes from autograd (``torch.autograd.grad``), with ``grad_output`` (or
ones) as the upstream gradient for ``reduction='none'``.

Option ``device``: ``cpu`` (default), ``cuda``, ``cuda:N`` or ``mps``, given as
``--adapter torch@device=cuda`` or ``--adapter torch:device=cuda``. A device
other than cpu names the adapter ``torch@cuda`` so it can share a table with
``torch``.

Dtypes: float64, float32 and float16 cross the NumPy boundary as themselves.
bfloat16 arrives as float32 arrays holding exact bfloat16 values (see
``harness.dtypes``); ``Tensor.to(torch.bfloat16)`` converts them without
rounding, and results go back as ``Tensor.float()``, float32 arrays that hold
the exact bfloat16 results. No ml_dtypes is involved.

Kernel fields (docs/kernel-features.md), which ``F.cross_entropy`` lacks, are composed
from torch ops around the same call: the targets shifted by slicing, the logits scaled
and soft-capped (``s * torch.tanh(a * x / s)``), ``z_loss * torch.logsumexp(...)**2`` masked
to the kept positions and reduced over their count. Half-precision inputs go through
these steps in float32 (what the fused kernels do), and the results are rounded back.

Fused linear cross-entropy (``run_linear``, docs/fused-linear.md): the logits are
``F.linear(hidden, classifier, bias)`` in the case dtype (float32 accumulation for half
precision, as torch's CPU and CUDA matmuls do), the loss is computed from them as above,
and the gradients w.r.t. the hidden states, the classifier and the bias come from autograd.

torch is imported inside ``load``/``run`` only, so ``--list`` never imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.adapters import (
    KERNEL_FEATURES,
    Adapter,
    CallInputs,
    LinearCallInputs,
    LinearOutput,
    Output,
)

#: the kernel fields that change how the loss is formed from the logits
LOGIT_FIELDS = frozenset({"softcap", "logit_scale", "z_loss", "return_z_loss"})

DEVICES = ("cpu", "cuda", "mps")


def torch_dtype(dtype: str) -> Any:
    """The torch dtype for a lossconf dtype name ('float64', ..., 'bfloat16')."""
    import torch

    return {
        "float64": torch.float64,
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
    }[dtype]


def _c_array(a: np.ndarray) -> np.ndarray:
    """``a`` itself when C-contiguous and writable (torch.from_numpy then shares it: no copy of
    2 GiB logits), else a C-contiguous copy that keeps 0-d arrays 0-d (np.ascontiguousarray
    makes them 1-d). The runner gives each call fresh arrays and checks they are left unchanged."""
    if a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, order="C", copy=True)


def to_torch(inputs: CallInputs, device: str = "cpu") -> tuple[Any, Any, Any, Any]:
    """Tensors ``(logits, target, weight, grad_output)`` on ``device`` in ``inputs.dtype``.

    Logits (and probability targets, weight, grad_output) are converted exactly:
    the carrier arrays hold values of ``inputs.dtype``. Class-index targets stay int64.
    ``weight`` and ``grad_output`` are None when absent; logits require grad.
    """
    import torch

    td = torch_dtype(inputs.dtype)

    def floating(a: np.ndarray | None) -> Any:
        if a is None:
            return None
        return torch.from_numpy(_c_array(a)).to(device=device, dtype=td)

    x = floating(inputs.logits).requires_grad_(inputs.want_grad)
    if inputs.probability_target:
        t = floating(inputs.target)
    else:
        t = torch.from_numpy(_c_array(inputs.target)).to(device)
    return x, t, floating(inputs.weight), floating(inputs.grad_output)


def to_numpy(tensor: Any, dtype: str) -> np.ndarray:
    """A torch tensor as a NumPy array in the carrier of ``dtype`` (bfloat16 -> exact float32).

    A floating tensor of another dtype is rounded to ``dtype`` first (torch's ``.to``: to
    nearest, ties to even), as ``from_jax`` and ``from_numpy`` round what they return: fused
    kernels keep the loss in float32 for half-precision logits (cut-cross-entropy,
    Liger-Kernel's fused linear loss), which is then checked for its value, not refused for
    its dtype. A float32 loss of a float64 case carries float32's errors and fails as such."""
    import torch

    tensor = tensor.detach()
    wanted = torch_dtype(dtype)
    if tensor.is_floating_point() and tensor.dtype != wanted:
        tensor = tensor.to(wanted)
    if tensor.dtype == torch.bfloat16:
        tensor = tensor.float()  # exact: every bfloat16 is a float32
    return tensor.cpu().numpy()


def loss_and_grad(
    loss: Any, x: Any, inputs: CallInputs, grad_output: Any, z_loss: Any = None
) -> Output:
    """Output with ``loss`` and, when wanted, d(loss)/d(x) by autograd (upstream: grad_output or
    ones); ``z_loss`` (a tensor) is returned as ``Output.z_loss``."""
    import torch

    grad = None
    if inputs.want_grad:
        upstream = grad_output
        if upstream is None and loss.dim() != 0:
            upstream = torch.ones_like(loss)
        # a scalar loss without grad_output takes autograd's implicit 1: the same gradient,
        # where an explicit ones tensor cost the first call at 2048 x 65536 about 0.4 s more
        # (0.65 to 1.05 s against 0.37 to 0.56 s, five fresh processes each)
        (g,) = torch.autograd.grad(loss, x, grad_outputs=upstream, allow_unused=True)
        grad = to_numpy(torch.zeros_like(x) if g is None else g, inputs.dtype)
    z = None if z_loss is None else to_numpy(z_loss, inputs.dtype)
    return Output(loss=to_numpy(loss, inputs.dtype), grad=grad, z_loss=z)


def shift_targets(t: Any, inputs: CallInputs | LinearCallInputs) -> Any:
    """Class indices shifted for causal language modelling: t[..., i + k] at i, and
    ignore_index at the last k positions (the loss keeps its shape)."""
    import torch

    k = inputs.shift
    if k == 0:
        return t
    out = torch.full_like(t, inputs.ignore_index)
    out[..., :-k] = t[..., k:]
    return out


def transform_logits(x: Any, inputs: CallInputs | LinearCallInputs) -> Any:
    """The logits the loss sees: s * tanh(a * x / s), or a * x (float32 for half precision)."""
    import torch

    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    if inputs.logit_scale != 1.0:
        x = x * inputs.logit_scale
    if inputs.softcap is not None:
        x = inputs.softcap * torch.tanh(x / inputs.softcap)
    return x


def z_loss_term(z: Any, t: Any, inputs: CallInputs | LinearCallInputs) -> Any:
    """z_loss * lse(z)**2 of each kept position, reduced like the loss (a mean over the kept
    count, not the weights)."""
    import torch

    lse = torch.logsumexp(z, dim=0 if z.ndim == 1 else 1)
    if inputs.probability_target:
        keep = torch.ones_like(lse, dtype=torch.bool)
    else:
        keep = t != inputs.ignore_index
    per_pos = torch.where(keep, inputs.z_loss * lse * lse, torch.zeros_like(lse))
    if inputs.reduction == "none":
        return per_pos
    if inputs.reduction == "sum":
        return per_pos.sum()
    return per_pos.sum() / keep.sum()


def check_targets_on_host(inputs: CallInputs, device: str) -> None:
    """IndexError for a class index outside [0, C) that is not ignore_index.

    On CUDA such a target is a device-side assert, which leaves the CUDA context
    unusable for every later call in the process (seen on an H200 with torch
    2.11: 290 later results became errors), so it is caught before the call.
    """
    if inputs.probability_target or inputs.logits.ndim == 0:
        return
    c = inputs.logits.shape[0] if inputs.logits.ndim == 1 else inputs.logits.shape[1]
    t = np.asarray(inputs.target)
    bad = (t != inputs.ignore_index) & ((t < 0) | (t >= c))
    if np.any(bad):
        raise IndexError(
            f"Target {int(t[bad].flat[0])} is out of bounds for {c} classes (checked on the "
            f"host: on {device} it would be a device-side assert that poisons the process)"
        )


class TorchAdapter(Adapter):
    """``torch.nn.functional.cross_entropy`` with autograd gradients."""

    name = "torch"
    description = "torch.nn.functional.cross_entropy, gradient by autograd"
    requires = ("torch",)
    supports = KERNEL_FEATURES

    def __init__(self, device: str = "cpu") -> None:
        self._device = str(device)
        if self._device != "cpu":
            self.name = f"{type(self).name}@{self._device}"

    def load(self) -> None:
        import torch

        kind = self._device.split(":")[0]
        if kind not in DEVICES:
            raise ValueError(f"device={self._device!r}: expected one of {', '.join(DEVICES)}")
        if kind == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device={self._device!r}: torch.cuda.is_available() is False")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(
                f"device={self._device!r}: torch.backends.mps.is_available() is False"
            )

    def version(self) -> str:
        import torch

        return f"torch {torch.__version__}"

    def device(self) -> str:
        if self._device.startswith("cuda"):
            import torch

            return f"{self._device} ({torch.cuda.get_device_name(self._device)})"
        return self._device

    def call(self, x: Any, t: Any, weight: Any, inputs: CallInputs | LinearCallInputs) -> Any:
        """The loss tensor for one call."""
        import torch.nn.functional as F

        return F.cross_entropy(
            x,
            t,
            weight=weight,
            ignore_index=inputs.ignore_index,
            reduction=inputs.reduction,
            label_smoothing=inputs.label_smoothing,
        )

    def run(self, inputs: CallInputs) -> Output:
        if self._device != "cpu":
            check_targets_on_host(inputs, self._device)
        x, t, weight, grad_output = to_torch(inputs, self._device)
        if not inputs.kernel_features():
            loss = self.call(x, t, weight, inputs)
            return loss_and_grad(loss, x, inputs, grad_output)
        return self._run_kernel(x, t, weight, grad_output, inputs)

    def _run_kernel(self, x: Any, t: Any, weight: Any, grad_output: Any, inputs: CallInputs) -> Any:
        """The kernel fields composed around ``call`` (see the module's docstring)."""
        if not inputs.probability_target:
            t = shift_targets(t, inputs)
        loss, returned = self._kernel_loss(x, t, weight, inputs)
        return loss_and_grad(loss, x, inputs, grad_output, returned)

    def _kernel_loss(
        self, x: Any, t: Any, weight: Any, inputs: CallInputs | LinearCallInputs
    ) -> tuple[Any, Any]:
        """The loss of logits ``x`` (class axis 1) and already shifted targets, with the
        logit fields, in x's dtype; and the returned z-loss term (or None)."""
        z = transform_logits(x, inputs)
        if z.dtype != x.dtype:  # half precision, computed in float32
            weight = None if weight is None else weight.float()
            t = t.float() if inputs.probability_target else t
        loss = self.call(z, t, weight, inputs)
        returned = None
        if inputs.z_loss != 0.0 or inputs.return_z_loss:
            z_loss = z_loss_term(z, t, inputs)
            if inputs.z_loss != 0.0:
                loss = loss + z_loss
            if inputs.return_z_loss:
                returned = z_loss.detach().to(x.dtype)
        return loss.to(x.dtype), returned

    def run_linear(self, inputs: LinearCallInputs) -> LinearOutput:
        """Fused linear cross-entropy, unfused: ``F.linear``, the loss, autograd."""
        import torch
        import torch.nn.functional as F

        td = torch_dtype(inputs.dtype)

        def floating(a: np.ndarray | None, grad: bool = False) -> Any:
            if a is None:
                return None
            tensor = torch.from_numpy(_c_array(a)).to(device=self._device, dtype=td)
            return tensor.requires_grad_(grad)

        want = inputs.want_grad
        h = floating(inputs.hidden, want)
        w = floating(inputs.classifier, want)
        b = floating(inputs.bias, want)
        t = shift_targets(torch.from_numpy(_c_array(inputs.target)).to(self._device), inputs)
        if self._device != "cpu":
            t_host = t.cpu().numpy()
            bad = (t_host != inputs.ignore_index) & ((t_host < 0) | (t_host >= w.shape[0]))
            if np.any(bad):
                raise IndexError(f"Target {int(t_host[bad].flat[0])} is out of bounds")
        logits = F.linear(h, w, b).reshape(-1, w.shape[0])  # (P, V)
        weight = floating(inputs.weight)
        if inputs.kernel_features() & LOGIT_FIELDS:
            loss, returned = self._kernel_loss(logits, t.reshape(-1), weight, inputs)
        else:
            loss, returned = self.call(logits, t.reshape(-1), weight, inputs), None
        if inputs.reduction == "none":
            loss = loss.reshape(t.shape)
            returned = None if returned is None else returned.reshape(t.shape)
        grads: list[Any] = [None, None, None]
        if want:
            go = floating(inputs.grad_output)
            upstream = go if go is not None else torch.ones_like(loss)
            wrt = [x for x in (h, w, b) if x is not None]
            # materialize_grads: zeros, not None, for an input the loss does not depend on
            found = torch.autograd.grad(
                loss, wrt, grad_outputs=upstream, allow_unused=True, materialize_grads=True
            )
            for i, g in enumerate(found):
                grads[i] = to_numpy(g, inputs.dtype)
        return LinearOutput(
            loss=to_numpy(loss, inputs.dtype),
            grad_hidden=grads[0],
            grad_classifier=grads[1],
            grad_bias=grads[2],
            z_loss=None if returned is None else to_numpy(returned, inputs.dtype),
        )


class TorchModuleAdapter(TorchAdapter):
    """``torch.nn.CrossEntropyLoss(...)(input, target)``: the module path, same semantics."""

    name = "torch-module"
    description = "torch.nn.CrossEntropyLoss, gradient by autograd"

    def call(self, x: Any, t: Any, weight: Any, inputs: CallInputs | LinearCallInputs) -> Any:
        import torch.nn as nn

        module = nn.CrossEntropyLoss(
            weight=weight,
            ignore_index=inputs.ignore_index,
            reduction=inputs.reduction,
            label_smoothing=inputs.label_smoothing,
        )
        return module(x, t)
