"""cases/generated/torch_samples.yaml is what tools/import_torch_samples.py writes from torch 2.13.0.

The regeneration runs in a fresh interpreter: importing torch.testing._internal
changes torch's global state (``torch.backends.disable_global_flags()``), which
must not leak into other tests. It takes about 9 s of CPU, most of it that import, the
largest cost of any one test; so what it writes is kept in the suite's cache folder, keyed
by everything it depends on (``_regeneration_key``), and a later session compares the
committed file with that (a changed script, harness, torch, package or Python regenerates).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
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


#: what the regeneration writes: the file, and the arrays and options torch's samples passed
WRITTEN = ("torch_samples.yaml", "sampled.npz", "sampled.json")


def _regeneration_key() -> str:
    """Everything the script's output depends on: its source and this file's driver, the
    source of the harness modules that shape and write a case (``harness.source_revision``:
    all of ``harness.cases``), the installed torch file by file (its RECORD of hashes), the
    version of every installed distribution, Python's, and what sets torch's thread count
    (the CPUs, the threading variables), which can change a sampled value's last bit."""
    from harness.source_revision import source_revision

    threads = sorted((k, v) for k, v in _env_for_the_script().items() if k.endswith("_NUM_THREADS"))
    # the environment's own folders: distributions() alone searches sys.path, which the tests
    # that run before this one in the same process may have left longer
    where = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    found = importlib.metadata.distributions(path=where)
    dists = sorted(f"{d.metadata['Name']}=={d.version}" for d in found)
    parts = [
        SCRIPT.read_bytes(), REGENERATE.encode(), source_revision().encode(),
        (importlib.metadata.distribution("torch").read_text("RECORD") or "").encode(),
        "\n".join(dists).encode(), sys.version.encode(),
        repr((os.cpu_count(), sorted(os.sched_getaffinity(0)), threads)).encode(),
    ]  # fmt: skip
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:32]


def _regenerate(folder: Path) -> None:
    """Run the script in a fresh interpreter; its files land in ``folder``."""
    code = textwrap.dedent(REGENERATE).format(
        tools=str(SCRIPT.parent), out=str(folder / WRITTEN[0]), sampled=str(folder / WRITTEN[1])
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


#: an entry no session has used for this long is removed (each change of the inputs adds one)
UNUSED_SECONDS = 24 * 3600


def regenerated(tmp_path: Path) -> Path:
    """The folder holding what the script writes now: read from the cache folder when a
    session has run it on exactly these inputs, else run (and kept there, whole or not at
    all: written beside, then renamed into place). Other checkouts and sessions may share the
    folder: an entry is removed only when none has used it for a day."""
    from harness.cache_folder import cache_dir

    base = cache_dir()
    if base is None:  # LOSSCONF_CACHE_DIR=off
        _regenerate(tmp_path)
        return tmp_path
    kept = base / "tests" / "torch_samples" / _regeneration_key()

    def complete() -> bool:
        return all((kept / name).is_file() for name in WRITTEN)

    if complete():
        os.utime(kept)  # in use
        return kept
    kept.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=".new-", dir=kept.parent))
    try:
        _regenerate(fresh)
        for old in kept.parent.iterdir():
            try:
                unused = time.time() - old.stat().st_mtime > UNUSED_SECONDS
            except FileNotFoundError:  # removed by another session just now
                continue
            if unused:
                shutil.rmtree(old, ignore_errors=True)
        try:
            fresh.rename(kept)
        except OSError:  # another session kept the same meanwhile
            if not complete():
                raise
    finally:
        shutil.rmtree(fresh, ignore_errors=True)
    return kept


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

    folder = regenerated(tmp_path)
    out, sampled = folder / WRITTEN[0], folder / WRITTEN[1]
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
