"""cases/generated/torch_samples.yaml is what tools/import_torch_samples.py writes from torch 2.13.0.

The regeneration runs in a fresh interpreter: importing torch.testing._internal
changes torch's global state (``torch.backends.disable_global_flags()``), which
must not leak into other tests. It takes about 5 s, most of it that import.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
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

#: in the fresh interpreter: write the file, and every array and option of every case it
#: holds as torch's sample passed it (``sampled``: arrays in an .npz, the rest as JSON), for
#: this process to compare with what the loader reads back from the file
REGENERATE = """
import json, sys
from pathlib import Path
import numpy as np
sys.path.insert(0, {tools!r})
import import_torch_samples as m

import torch
m.check_version(torch.__version__, allow=False)
samples = [s for s in m.write(Path({out!r}), torch.__version__) if s.skip is None]
arrays, rest = {{}}, {{}}
for s in samples:
    name = m.case_name(s)
    assert name not in rest, name
    arrays[name + "|logits"] = s.logits.detach().numpy()
    arrays[name + "|target"] = s.target.detach().numpy()
    if s.options.get("weight") is not None:
        arrays[name + "|weight"] = s.options["weight"].detach().numpy()
    options = {{k: s.options[k] for k in ("reduction", "ignore_index", "label_smoothing")
               if k in s.options}}
    rest[name] = {{"options": options, "expect_error": s.expect_error}}
np.savez(Path({sampled!r}), **arrays)
Path({sampled!r}).with_suffix(".json").write_text(json.dumps(rest))
print("written:", len(samples), "cases")
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
    """The script writes the committed file byte for byte, and every array the loader reads
    back from it is bit for bit the tensor torch's sample passed (the committed file is read
    here once the two are the same bytes: through the session's load cache)."""
    import numpy as np

    from harness.cases.loader import load_file

    out, sampled = tmp_path / "torch_samples.yaml", tmp_path / "sampled.npz"
    code = textwrap.dedent(REGENERATE).format(
        tools=str(SCRIPT.parent), out=str(out), sampled=str(sampled)
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=_env_for_the_script(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "written:" in proc.stdout
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
    arrays = np.load(sampled)
    samples = json.loads(sampled.with_suffix(".json").read_text())
    cases = {c.name: c for c in load_file(COMMITTED)}
    assert sorted(cases) == sorted(samples)
    for name, sample in samples.items():
        c = cases[name]
        fields = ["logits", "target", *(["weight"] if f"{name}|weight" in arrays else [])]
        for field in fields:
            got, want = getattr(c, field), arrays[f"{name}|{field}"]
            assert got.dtype.kind == want.dtype.kind, (name, field, got.dtype, want.dtype)
            assert got.shape == want.shape and np.array_equal(got, want), (name, field)
        if "weight" not in fields:
            assert c.weight is None, name
        for key, value in sample["options"].items():
            assert getattr(c, key) == value, (name, key)
        assert c.expect_error == sample["expect_error"], name


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
