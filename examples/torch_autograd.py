"""A hand-written torch cross-entropy with its own ``torch.autograd.Function``.

Forward: loss_n = -w[y_n] * log_softmax(x_n)[y_n], 0 where y_n == ignore_index,
reduced as PyTorch does (the weighted mean divides by sum_n w[y_n]). log_softmax
rather than logsumexp(x_n) - x[n, y_n]: that difference cancels for huge logits
(two tied logits of 1e300 give 0, not log 2).
Backward, written by hand instead of left to autograd, in PyTorch's order: the
upstream factor g_n (grad_output, 1, or 1 / sum_n w[y_n]) makes
d loss / d log_softmax(x_n)[y_n] = -w[y_n] g_n at kept positions, and
d loss / d x_n = that row minus softmax(x_n) times its sum. So a weighted mean
whose weights sum to 0 gets PyTorch's nan and inf gradients, and ignored
positions a gradient of exactly 0. Half precision is computed in float32.

What it leaves out: label smoothing and probability targets. The function raises
``NotImplementedError`` for them, which lossconf reports as ``unsupported`` (not
``fail``) with this message, case by case.

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
        wy = torch.where(keep, w[safe], 0.0)
        lp = torch.log_softmax(xf, dim=1)
        per_row = torch.where(keep, -wy * lp.gather(1, safe[:, None])[:, 0], 0.0)
        denominator = wy.sum()
        ctx.save_for_backward(lp, safe, keep, wy, denominator)
        ctx.reduction, ctx.dtype = reduction, x.dtype
        if reduction == "none":
            return per_row.to(x.dtype)
        if reduction == "sum":
            return per_row.sum().to(x.dtype)
        return (per_row.sum() / denominator).to(x.dtype)

    @staticmethod
    def backward(ctx, upstream):
        lp, safe, keep, wy, denominator = ctx.saved_tensors
        up = upstream.to(lp.dtype)
        g = up / denominator if ctx.reduction == "mean" else up  # 1/0 = inf, as in PyTorch
        # d loss / d lp at the targets; ignored positions get 0, never 0 * inf
        at_target = torch.where(keep, -wy * g, 0.0)
        d_lp = torch.zeros_like(lp)
        d_lp[torch.arange(len(safe)), safe] = at_target
        grad = d_lp - torch.exp(lp) * d_lp.sum(dim=1, keepdim=True)
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
