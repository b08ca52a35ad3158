"""Target 6: the torch adapter on the largest case, against bare F.cross_entropy + backward.

    python benchmarks/bench_torch_large.py                 # 4096 x 131072 float32 (2 GiB)
    python benchmarks/bench_torch_large.py --rows 512      # quicker

Both run on the same float32 logits (class-index targets, a quarter ignored,
class weights, label smoothing 0.1) in one process, interleaved, best of
``--repeat`` calls after a warm-up call; peak RSS is the process's high-water
mark during each side's calls (``harness.execution.peak_memory``, so it includes the inputs). Bare: tensors made
with ``torch.from_numpy`` (no copy), ``F.cross_entropy``, ``torch.autograd.grad``,
``.numpy()``. Adapter: ``TorchAdapter().run(CallInputs)``, which is what the
runner times. Prints one markdown table row per side.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def make_inputs(rows: int, classes: int):
    from harness.adapters import CallInputs

    rng = np.random.default_rng(0)
    x = np.empty((rows, classes), dtype=np.float32)
    for lo in range(0, rows, 64):
        x[lo : lo + 64] = rng.standard_normal((min(64, rows - lo), classes), dtype=np.float32) * 4
    t = rng.integers(0, classes, rows)
    t[rng.random(rows) < 0.25] = -100
    w = rng.uniform(0.5, 2.0, classes).astype(np.float32)
    return CallInputs(x, t, w, "mean", -100, 0.1, "float32")


def bare(inputs) -> tuple[np.ndarray, np.ndarray]:
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(inputs.logits).requires_grad_(True)
    loss = F.cross_entropy(
        x,
        torch.from_numpy(inputs.target),
        weight=torch.from_numpy(inputs.weight),
        ignore_index=inputs.ignore_index,
        reduction=inputs.reduction,
        label_smoothing=inputs.label_smoothing,
    )
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach().numpy(), g.numpy()


def measure(rows: int, classes: int, repeat: int) -> dict:
    """Both sides in one process, interleaved (the machine is shared), best of ``repeat`` each."""
    import torch  # noqa: F401 - imported before timing, as the harness loads adapters first

    from harness.adapters.torch_ce import TorchAdapter
    from harness.execution import peak_memory

    inputs = make_inputs(rows, classes)
    adapter = TorchAdapter()
    adapter.load()
    sides = {"bare": bare, "adapter": adapter.run}
    times = {side: [] for side in sides}
    peaks = dict.fromkeys(sides, 0)
    for fn in sides.values():
        fn(inputs)  # warm-up
    for _ in range(repeat):
        for side, fn in sides.items():
            peak_memory.reset()
            t = time.perf_counter()
            out = fn(inputs)
            times[side].append(time.perf_counter() - t)
            peaks[side] = max(peaks[side], peak_memory.peak_bytes())
            del out
    return {side: {"seconds": min(times[side]), "peak_bytes": peaks[side]} for side in sides} | {
        "logits_bytes": inputs.logits.nbytes
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--classes", type=int, default=131072)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    out = measure(args.rows, args.classes, args.repeat)
    n = out["logits_bytes"]
    print(
        f"| {args.rows} x {args.classes} float32 | seconds (best) | x bare | peak RSS / logits bytes |"
    )
    print("|---|---|---|---|")
    for side, label in (
        ("bare", "bare F.cross_entropy + autograd.grad"),
        ("adapter", "torch adapter run()"),
    ):
        r = out[side]
        ratio = r["seconds"] / out["bare"]["seconds"]
        print(f"| {label} | {r['seconds']:.2f} | {ratio:.2f} | {r['peak_bytes'] / n:.2f} |")


if __name__ == "__main__":
    main()
