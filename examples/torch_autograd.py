"""A hand-written torch cross-entropy with its own ``torch.autograd.Function``.

Forward: loss_n = w[y_n] * (logsumexp(x_n) - x[n, y_n]), 0 where y_n == ignore_index,
reduced as PyTorch does (the weighted mean divides by sum_n w[y_n]).
Backward: d loss_n / d x_n = w[y_n] * (softmax(x_n) - onehot(y_n)), written by hand
instead of left to autograd. Half precision is computed in float32.

Label smoothing and probability targets are not implemented: the function raises
``NotImplementedError``, which lossconf reports as ``unsupported`` (not ``fail``).

    python -m harness --adapter examples/torch_autograd.py:cross_entropy
"""

import torch


class _CrossEntropy(torch.autograd.Function):
    """Rows (P, C) and labels (P,) -> loss ('none': (P,); else a scalar)."""

    @staticmethod
    def forward(ctx, x, target, weight, ignore_index, reduction):
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        keep = target != ignore_index
        safe = torch.where(keep, target, torch.zeros_like(target))
        w = torch.ones(x.shape[1], dtype=xf.dtype) if weight is None else weight.to(xf.dtype)
        wy = w[safe] * keep
        lse = torch.logsumexp(xf, dim=1)
        per_row = torch.where(keep, wy * (lse - xf.gather(1, safe[:, None])[:, 0]), 0.0)
        denominator = wy.sum()
        ctx.save_for_backward(xf, safe, wy, denominator)
        ctx.reduction, ctx.dtype = reduction, x.dtype
        if reduction == "none":
            return per_row.to(x.dtype)
        if reduction == "sum":
            return per_row.sum().to(x.dtype)
        return (per_row.sum() / denominator).to(x.dtype)

    @staticmethod
    def backward(ctx, upstream):
        xf, safe, wy, denominator = ctx.saved_tensors
        grad = torch.softmax(xf, dim=1)
        grad[torch.arange(len(safe)), safe] -= 1.0
        grad = grad * wy[:, None]
        up = upstream.to(xf.dtype)
        if ctx.reduction == "none":
            grad = grad * up[:, None]
        elif ctx.reduction == "mean":
            # all targets ignored: the loss is 0/0 = nan but the gradient is zero, as in PyTorch
            grad = grad * (up / denominator if denominator != 0 else up * 0.0)
        else:
            grad = grad * up
        return grad.to(ctx.dtype), None, None, None, None


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):  # fmt: skip
    """F.cross_entropy's signature; input (C,), (N, C) or (N, C, d1, ..., dK)."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction={reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing={label_smoothing} must be in [0, 1]")
    if label_smoothing > 0:
        raise NotImplementedError("label_smoothing")
    if target.is_floating_point():
        raise NotImplementedError("probability targets")
    c = input.shape[0] if input.dim() == 1 else input.shape[1]
    if weight is not None and weight.shape != (c,):
        raise ValueError(f"weight of shape {tuple(weight.shape)}, expected ({c},)")
    batched = input if input.dim() > 1 else input[None]
    labels = target if input.dim() > 1 else target[None]
    if labels.shape != batched.shape[:1] + batched.shape[2:]:
        raise ValueError(f"target of shape {tuple(target.shape)} does not fit {tuple(input.shape)}")
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= c))
    if bad.any():
        raise IndexError(f"target {labels[bad][0].item()} out of bounds for {c} classes")
    rows = batched.movedim(1, -1).reshape(-1, c)
    loss = _CrossEntropy.apply(rows, labels.reshape(-1), weight, ignore_index, reduction)
    if reduction == "none":
        return loss.reshape(labels.shape if input.dim() > 1 else ())
    return loss
