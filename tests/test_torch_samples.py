"""cases/generated/torch_samples.yaml is what tools/import_torch_samples.py writes from torch 2.13.0.

The regeneration runs in a fresh interpreter: importing torch.testing._internal
changes torch's global state (``torch.backends.disable_global_flags()``), which
must not leak into other tests. It takes about 5 s, most of it that import.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# the version from the installed metadata: importing torch here would cost every pytest-xdist
# worker two seconds at collection, whether or not it runs these tests
if importlib.util.find_spec("torch") is None:
    pytest.skip("torch is not installed", allow_module_level=True)
TORCH_VERSION = importlib.metadata.version("torch")
if not TORCH_VERSION.startswith("2.13.0"):
    pytest.skip(
        f"the committed file comes from torch 2.13.0, not {TORCH_VERSION}",
        allow_module_level=True,
    )

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tools" / "import_torch_samples.py"
COMMITTED = REPO / "cases" / "generated" / "torch_samples.yaml"

#: in the fresh interpreter: write the file, then check that every array the loader reads
#: back from it is bit for bit the tensor torch's sample passed
REGENERATE = """
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {tools!r})
import import_torch_samples as m
from harness.cases.loader import load_file

import torch
m.check_version(torch.__version__, allow=False)
samples = [s for s in m.write(Path({out!r}), torch.__version__) if s.skip is None]
cases = {{c.name: c for c in load_file(Path({out!r}))}}
assert len(samples) == len(cases), (len(samples), len(cases))
for s in samples:
    c = cases[m.case_name(s)]
    pairs = [("logits", c.logits, s.logits), ("target", c.target, s.target)]
    if s.options.get("weight") is not None:
        pairs.append(("weight", c.weight, s.options["weight"]))
    for field, got, want in pairs:
        want = want.detach().numpy()
        assert got.dtype.kind == want.dtype.kind, (c.name, field, got.dtype, want.dtype)
        assert got.shape == want.shape and np.array_equal(got, want), (c.name, field)
    for key in ("reduction", "ignore_index", "label_smoothing"):
        if key in s.options:
            assert getattr(c, key) == s.options[key], (c.name, key)
    assert c.expect_error == s.expect_error, c.name
print("round trip ok:", len(cases), "cases")
"""


def _env_for_the_script() -> dict:
    """torch's default thread count, as when the file was written: with OMP_NUM_THREADS=1
    (tests/conftest.py sets it for the suite) some sampled probabilities differ in their
    last bit."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return {**env, "LOSSCONF_CACHE_DIR": "off"}


@pytest.mark.skipif(
    importlib.util.find_spec("expecttest") is None,
    reason="torch.testing._internal needs expecttest (pip install expecttest)",
)
def test_regenerated_file_is_the_committed_one_and_reads_back_exactly(tmp_path):
    out = tmp_path / "torch_samples.yaml"
    code = textwrap.dedent(REGENERATE).format(tools=str(SCRIPT.parent), out=str(out))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=_env_for_the_script(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round trip ok" in proc.stdout
    new, old = out.read_bytes(), COMMITTED.read_bytes()
    if new != old:
        new_lines, old_lines = new.decode().splitlines(), old.decode().splitlines()
        first = next(
            (i for i, (a, b) in enumerate(zip(new_lines, old_lines, strict=False)) if a != b),
            min(len(new_lines), len(old_lines)),
        )
        pytest.fail(
            f"{COMMITTED.relative_to(REPO)} differs from what {SCRIPT.relative_to(REPO)} writes "
            f"now (first at line {first + 1}; {len(old_lines)} lines committed, "
            f"{len(new_lines)} written): run the script and commit the file"
        )


def test_refuses_another_torch_version(monkeypatch, tmp_path, capsys):
    import torch

    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import import_torch_samples as m
    finally:
        sys.path.remove(str(SCRIPT.parent))
    monkeypatch.setattr(torch, "__version__", "2.14.0+cpu")
    out = tmp_path / "never.yaml"
    assert m.main(["--out", str(out)]) == 2
    assert "--allow-version" in capsys.readouterr().err
    assert not out.exists()
    m.check_version("2.14.0+cpu", allow=True)  # allowed: the file then names 2.14.0
