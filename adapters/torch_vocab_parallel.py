"""``torch-vocab-split``: cross-entropy with the class axis split across ranks, in torch.

The project's reference for vocab-parallel runs (``--world-size R``,
docs/kernel-features.md). Each rank holds the logits of a contiguous shard of the
classes (``CallInputs.vocab_shard``: classes ``[vocab_start, vocab_end)`` of C), the
whole class-index target with global indices, the weights' shard; it returns the
whole loss (identical on every rank) and the gradient of its own shard.

Forward, per position n (a row of the class-last ``(P, C_r)`` view of the shard),
two or three all-reduces over the ranks' process group:

    m_n   = max over ranks of the shard maxima                  all_reduce(MAX)
    s_n   = sum over ranks of sum_j exp(x_nj - m_n)             one all_reduce(SUM) of
    x_ny, w_y: the target's logit and weight, taken by the one    the rows packed
            rank whose shard holds y_n (0 on the others, and 0    together
            at an ignored position)
    W = sum_j w_j (label smoothing)
    lse_n = m_n + log(s_n)
    label smoothing: S_n = sum_j w_j (lse_n - x_nj)                     all_reduce(SUM)
    probability targets (their shard, q = (1 - eps) y + eps / C):
            L_n = sum_j w_j q_nj (lse_n - x_nj), A_n = sum_j w_j q_nj   all_reduce(SUM)

    loss_n = (1 - eps) w_y (lse_n - x_ny) + (eps / C) S_n    (class indices, 0 if ignored)
    loss_n = L_n                                             (probability targets)

``S_n`` and ``L_n`` are summed after ``lse_n`` is known, term by term, rather than as
``lse_n * sum_j w_j - sum_j w_j x_nj``, which cancels catastrophically when the logits
are large. A ``mean`` divides the NLL and the smoothing sums separately by
``den = sum_n w_y`` (P for probability targets), as PyTorch does (0/0 is NaN even where
the smoothing sum is not 0). Backward, in closed form on the rank's own shard, with no
further collective, composed as PyTorch composes it (the log-softmax backward of the
gradient w.r.t. the log-probabilities, so infinite and NaN factors come out alike):

    p_nj = exp(x_nj - lse_n)
    a_n  = (1 - eps) w_y u_n,   b_n = (eps / C) u_n,   W = sum_j w_j
    g_nj = p_nj (a_n + b_n W) - b_n w_j - a_n [j = y_n]       (class indices)
    g_nj = u_n (A_n p_nj - w_j q_nj)                          (probability targets)

with ``u_n`` = ``grad_output[n]`` ('none'), 1 ('sum') or 1/den ('mean'), and 0 at an
ignored position (0 * NaN stays NaN, as in PyTorch). Computation is in float64 for
float64 inputs and in float32 otherwise; results are rounded once to the input dtype.

The kernel fields (docs/kernel-features.md) need no collective of their own: the logit
scale and the softcap act on each logit of the shard (``z = s tanh(a x / s)``, the
gradient times ``dz/dx = a (1 - tanh**2)``), the shift on the whole target every rank
holds, and the z-loss ``c lse_n**2`` uses the all-reduced ``lse_n`` (its gradient
``2 c lse_n p_nj u'_n``, ``u'_n`` over the kept count K for a mean).

Fused linear cross-entropy (``run_linear``, docs/fused-linear.md) is split as Megatron's
column-parallel output layer splits it: each rank holds the whole hidden states h and
its rows ``[vocab_start, vocab_end)`` of the classifier and bias, forms its logits shard
``z = h W_r^T + b_r`` (P, C_r) in the accumulation dtype, and runs the above on it. Then
``grad_classifier_r = G^T h`` and ``grad_bias_r = sum_n G_n`` are its own rows', and
``grad_hidden = sum over ranks of G W_r`` is one more all_reduce(SUM), returned whole on
every rank.

Outside a vocab-parallel run (``vocab_shard`` None) the adapter is one rank holding
every class, and each collective is the identity; it then also raises PyTorch's
errors for invalid input. torch is imported inside ``load``/``run`` only.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from harness.adapters import (
    KERNEL_FEATURES,
    VOCAB_PARALLEL,
    Adapter,
    CallInputs,
    LinearCallInputs,
    LinearOutput,
    Output,
    VocabShard,
)
from harness.adapters.numpy_ref import validate
from harness.adapters.torch_ce import shift_targets, to_numpy, torch_dtype


class _Pass(NamedTuple):
    """One forward and backward on a rank's logits rows, in the accumulation dtype: the loss,
    G = dLoss/dlogits (P, C_r), the z-loss term (None when not asked), the probabilities
    (P, C_r) and the positions whose target is kept (P,)."""

    loss: Any
    grad: Any
    z_loss: Any
    p: Any
    keep: Any


class TorchVocabParallel(Adapter):
    """The vocab-parallel reference: collectives of torch.distributed, closed-form backward."""

    name = "torch-vocab-split"
    description = "vocab-parallel cross-entropy in torch: all_reduce of max, sum of exp, target"
    requires = ("torch",)
    supports = KERNEL_FEATURES | {VOCAB_PARALLEL}

    def __init__(self, device: str = "cpu") -> None:
        self._device = str(device)
        if self._device != "cpu":
            self.name = f"{type(self).name}@{self._device}"

    def load(self) -> None:
        import torch

        if self._device.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device={self._device!r}: torch.cuda.is_available() is False")

    def version(self) -> str:
        import torch

        return f"torch {torch.__version__}"

    def device(self) -> str:
        return self._device

    # -- the collectives (each a method: a mutant overrides one) ------------------------

    def all_reduce(self, t: Any, op: str, shard: VocabShard | None) -> Any:
        """``t`` reduced over the ranks by ``op`` ('max' or 'sum'), in place; the identity
        outside a vocab-parallel run."""
        if shard is None:
            return t
        import torch.distributed as dist

        dist.all_reduce(t, op=getattr(dist.ReduceOp, op.upper()), group=shard.group)
        return t

    def global_max(self, x: Any, shard: VocabShard | None) -> Any:
        """m_n: the maximum of row n over every rank's shard ((P,); -inf for an empty shard)."""
        import torch

        if x.shape[1] == 0:
            m = torch.full((x.shape[0],), -torch.inf, dtype=x.dtype, device=x.device)
        else:
            m = x.amax(dim=1)
        return self.all_reduce(m, "max", shard)

    def sums_after_max(self, rows: list[Any], shard: VocabShard | None) -> list[Any]:
        """The sums over the ranks that need only the max, in one all_reduce(SUM) of the rows
        packed together: ``rows[0]`` this rank's sums of exponentials ``sum_j exp(x_nj - m_n)``
        (P,), then for class indices the target's logit and weight (P,) each, and with
        smoothing the weight total (1,). Returns the reduced rows, s_n first."""
        import torch

        sizes = [r.numel() for r in rows]
        packed = self.all_reduce(torch.cat([r.reshape(-1) for r in rows]), "sum", shard)
        return list(packed.split(sizes))

    def vocab_start(self, shard: VocabShard | None, classes_here: int) -> int:
        """The global index of this rank's first class (0 outside a vocab-parallel run)."""
        return 0 if shard is None else shard.vocab_start

    def target_terms(self, x: Any, w: Any, t: Any, keep: Any, start: int) -> Any:
        """This rank's (x_ny, w_y) of each position ((2, P)): the values where it owns y_n, 0
        elsewhere (the sum over the ranks is the target's)."""
        import torch

        own = keep & (t >= start) & (t < start + x.shape[1])
        local = torch.where(own, t - start, 0)
        terms = torch.zeros((2, x.shape[0]), dtype=x.dtype, device=x.device)
        if x.shape[1] > 0:
            rows = torch.arange(x.shape[0], device=x.device)
            terms[0] = torch.where(own, x[rows, local], 0.0)
            terms[1] = torch.where(own, w[local], 0.0)
        return terms

    # -- the call -----------------------------------------------------------------------

    def run(self, inputs: CallInputs) -> Output:
        import torch

        shard = inputs.vocab_shard
        if shard is None:
            validate(inputs.logits, inputs.target, inputs)
        elif inputs.reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction={inputs.reduction!r} must be one of none, mean, sum")
        device = shard.device if shard is not None else self._device
        acc = torch.float64 if inputs.dtype == "float64" else torch.float32
        logits = torch.from_numpy(inputs.logits.copy()).to(device=device, dtype=acc)
        shape = tuple(logits.shape)
        if shard is not None and not inputs.probability_target:
            _check_range(inputs, shard.vocab_size)
        target_shape = () if inputs.logits.ndim == 1 else shape[:1] + shape[2:]
        done = self.cross_entropy(_rows(logits), inputs, target_shape, device, acc)
        out_dtype = torch_dtype(inputs.dtype)
        grad = None
        if inputs.want_grad:
            grad = to_numpy(_unrows(done.grad, shape).to(out_dtype), inputs.dtype)
        z = None
        if inputs.return_z_loss and done.z_loss is not None:
            z = to_numpy(done.z_loss.to(out_dtype), inputs.dtype)
        return Output(loss=to_numpy(done.loss.to(out_dtype), inputs.dtype), grad=grad, z_loss=z)

    def run_linear(self, inputs: LinearCallInputs) -> LinearOutput:
        """Fused linear cross-entropy, vocab-parallel as Megatron's column-parallel output
        layer runs it: this rank's logits ``z = h W_r^T + b_r`` (P, V_r) from the whole
        hidden states and its classifier rows, in the accumulation dtype (never rounded), the
        loss and G = dLoss/dz on them as for logits, then

            grad_classifier_r = G^T h        grad_bias_r = sum_n G_n      (its own rows)
            grad_hidden       = sum over ranks of G W_r                   all_reduce(SUM)

        each rounded once to the dtype. ``grad_hidden`` is all-reduced as the backward of
        Megatron's ``copy_to_tensor_model_parallel_region`` does, so every rank returns the
        whole gradient (the loss is replicated too)."""
        import torch

        shard = inputs.vocab_shard
        if inputs.reduction not in ("none", "mean", "sum"):
            raise ValueError(f"reduction={inputs.reduction!r} must be one of none, mean, sum")
        device = shard.device if shard is not None else self._device
        acc = torch.float64 if inputs.dtype == "float64" else torch.float32

        def tensor(a: Any) -> Any:
            return None if a is None else torch.from_numpy(a.copy()).to(device=device, dtype=acc)

        h, classifier, bias = tensor(inputs.hidden), tensor(inputs.classifier), tensor(inputs.bias)
        _check_range(inputs, shard.vocab_size if shard is not None else classifier.shape[0])
        rows = h.reshape(-1, h.shape[-1])  # (P, H), in the target's order
        z = rows @ classifier.T
        if bias is not None:
            z = z + bias
        done = self.cross_entropy(z, inputs, tuple(inputs.target.shape), device, acc)
        out_dtype = torch_dtype(inputs.dtype)

        def out(t: Any) -> Any:
            return to_numpy(t.to(out_dtype), inputs.dtype)

        grads: list[Any] = [None, None, None]
        if inputs.want_grad:
            g = done.grad
            grads[0] = out(self.grad_hidden(g @ classifier, shard).reshape(h.shape))
            grads[1] = out(self.grad_classifier(g, rows, done))
            grads[2] = None if bias is None else out(g.sum(dim=0))
        z_out = None
        if inputs.return_z_loss and done.z_loss is not None:
            z_out = out(done.z_loss)
        return LinearOutput(out(done.loss), grads[0], grads[1], grads[2], z_out)

    def grad_hidden(self, partial: Any, shard: VocabShard | None) -> Any:
        """The hidden states' gradient (P, H): the sum over ranks of each rank's G W_r."""
        return self.all_reduce(partial, "sum", shard)

    def grad_classifier(self, g: Any, rows: Any, done: _Pass) -> Any:
        """This rank's classifier rows' gradient G^T h (V_r, H)."""
        return g.T @ rows

    def cross_entropy(
        self,
        logits: Any,
        inputs: CallInputs | LinearCallInputs,
        target_shape: tuple[int, ...],
        device: str,
        acc: Any,
    ) -> _Pass:
        """The loss (the target's shape for 'none'), dLoss/dlogits and the z-loss term, in
        ``acc``, from this rank's class-last logits rows ``logits`` (P, C_r)."""
        import torch

        shard = inputs.vocab_shard
        x, dzdx = _transform(logits, inputs)
        c_total = shard.vocab_size if shard is not None else x.shape[1]
        start = self.vocab_start(shard, x.shape[1])
        w = (
            torch.ones(x.shape[1], dtype=acc, device=device)
            if inputs.weight is None
            else torch.from_numpy(inputs.weight.copy()).to(device=device, dtype=acc)
        )
        eps = float(inputs.label_smoothing) if inputs.label_smoothing > 0 else 0.0

        m = self.global_max(x, shard)
        e = torch.exp(x - m[:, None])
        local = [e.sum(dim=1)]
        if not inputs.probability_target:
            t = torch.from_numpy(inputs.target.copy()).to(device)
            t = shift_targets(t, inputs).reshape(-1)
            keep = t != inputs.ignore_index
            local += list(self.target_terms(x, w, t, keep, start))
            if eps:
                local.append(w.sum().reshape(1))
        s, *after_max = self.sums_after_max(local, shard)
        lse = m + torch.log(s)
        p = torch.exp(x - lse[:, None])
        base = self._upstream(inputs, x.shape[0], device, acc)
        up = base

        if inputs.probability_target:
            assert isinstance(inputs, CallInputs)  # a fused call has class-index targets
            y = _rows(torch.from_numpy(inputs.target.copy()).to(device=device, dtype=acc))
            wq = w * ((1 - eps) * y + eps / c_total)
            la = torch.stack([(wq * (lse[:, None] - x)).sum(dim=1), wq.sum(dim=1)])
            loss_n, a = self.all_reduce(la, "sum", shard)
            if inputs.reduction == "mean":
                up = up / x.shape[0]
            loss = _reduced(loss_n, inputs.reduction, target_shape, x.shape[0])
            # d loss / d log-probabilities is -u w q; the log-softmax backward adds p * u A
            g = up[:, None] * (a[:, None] * p - wq)
            keep = torch.ones_like(lse, dtype=torch.bool)
        else:
            xy, wy = after_max[:2]
            nll = torch.where(keep, wy * (lse - xy), 0.0)
            den = wy.sum()
            if inputs.reduction == "mean":
                up = up / den
            up = torch.where(keep, up, 0.0)
            # PyTorch's composition: the log-softmax backward of d loss / d log-probabilities
            # g (-a_n at the target, -b_n w_j everywhere): grad = g - p * sum_j g_nj
            a = (1 - eps) * wy * up
            rowsum = a
            loss = _reduced(nll, inputs.reduction, target_shape, den)
            g = None
            if eps:
                smooth = self.all_reduce((w * (lse[:, None] - x)).sum(dim=1), "sum", shard)
                smooth = torch.where(keep, smooth, 0.0)
                loss = (1 - eps) * loss + (eps / c_total) * _reduced(
                    smooth, inputs.reduction, target_shape, den
                )
                b = (eps / c_total) * up
                rowsum = a + b * after_max[2]
                g = -b[:, None] * w
            g = p * rowsum[:, None] if g is None else g + p * rowsum[:, None]
            own = keep & (t >= start) & (t < start + x.shape[1])
            rows = torch.arange(x.shape[0], device=device)[own]
            g[rows, (t - start)[own]] -= a[own]

        z_out = None
        if inputs.z_loss != 0.0 or inputs.return_z_loss:
            # c lse**2 per kept position; a mean over the kept count K, never the weights
            count = keep.sum()
            z_n = torch.where(keep, inputs.z_loss * lse * lse, 0.0)
            z_out = _reduced(z_n, inputs.reduction, target_shape, count)
            if inputs.z_loss != 0.0:
                loss = loss + z_out
                uz = base / count if inputs.reduction == "mean" else base
                g = g + (2 * inputs.z_loss * lse * torch.where(keep, uz, 0.0))[:, None] * p
        if dzdx is not None:
            g = g * dzdx
        return _Pass(loss, g, z_out, p, keep)

    def _upstream(
        self, inputs: CallInputs | LinearCallInputs, positions: int, device: str, acc: Any
    ) -> Any:
        """u_n before the mean's division: grad_output ('none', when given), else ones."""
        import torch

        if inputs.reduction == "none" and inputs.grad_output is not None:
            go = torch.from_numpy(inputs.grad_output.copy()).to(device=device, dtype=acc)
            return go.reshape(-1)
        return torch.ones(positions, dtype=acc, device=device)


def _transform(x: Any, inputs: CallInputs | LinearCallInputs) -> tuple[Any, Any]:
    """The logits the loss sees, z = s tanh(a x / s) (a x without a softcap), elementwise on
    the shard, and dz/dx = a (1 - tanh**2) (None when z = x)."""
    import torch

    a, cap = inputs.logit_scale, inputs.softcap
    if a != 1.0:
        x = x * a
    if cap is None:
        return x, (None if a == 1.0 else a)
    th = torch.tanh(x / cap)
    return cap * th, a * (1 - th * th)


def _reduced(per_position: Any, reduction: str, shape: tuple[int, ...], den: Any) -> Any:
    """'none': the per-position values in the target's shape; 'sum'; 'mean': sum / den."""
    if reduction == "none":
        return per_position.reshape(shape)
    total = per_position.sum()
    return total if reduction == "sum" else total / den


def _check_range(inputs: CallInputs | LinearCallInputs, classes: int) -> None:
    """IndexError for a class index outside [0, C) that is not ignore_index (C: every shard's
    classes together), raised alike on every rank before any collective."""
    import numpy as np

    t = np.asarray(inputs.target)
    bad = (t != inputs.ignore_index) & ((t < 0) | (t >= classes))
    if np.any(bad):
        raise IndexError(f"target {t[bad].flat[0]} is out of bounds for {classes} classes")


def _rows(a: Any) -> Any:
    """(C,) / (N, C, d1, ...) -> (P, C): class axis last, positions flattened."""
    if a.ndim == 1:
        return a.reshape(1, a.shape[0])
    positions = a.shape[0] * math.prod(a.shape[2:])
    return a.movedim(1, -1).reshape(positions, a.shape[1])


def _unrows(g: Any, shape: tuple[int, ...]) -> Any:
    """The inverse of ``_rows`` for an array of ``shape``."""
    if len(shape) == 1:
        return g.reshape(shape)
    return g.reshape((shape[0], *shape[2:], shape[1])).movedim(-1, 1)
