"""Faulty adapters (tests/faulty_adapters/): each costs one result, reported with a useful message,
and every other result is still in the report. Each adapter misbehaves only on faulty_cases/b_sum.

Faults an adapter commits inside the harness's process run the command in process (``cli``),
and so does a worker of ``--isolate`` that cannot load its adapter; crashes of isolated workers
run it in a fresh interpreter (``cli_process``)."""

from __future__ import annotations

import json

from conftest import REPO

FAULTY = REPO / "tests" / "faulty_adapters"
CASES = str(FAULTY / "faulty_cases.yaml")
CASE_IDS = ["faulty_cases/a_mean", "faulty_cases/b_sum", "faulty_cases/c_none"]


def _run(cli, tmp_path, adapters: list[str], *options: str):
    report = tmp_path / "report.json"
    args = ["--cases", CASES, "--adapter", "numpy"]
    for name in adapters:
        args += ["--adapter", str(FAULTY / f"{name}.py")]
    r = cli(*args, *options, "-q", "--report", str(report))
    assert "Traceback" not in r.output
    doc = json.loads(report.read_text())
    by_key = {(x["adapter"], x["case_id"]): x for x in doc["results"]}
    return r, doc, by_key


def _check_everything_else_passed(doc, by_key, adapters, faulty_case="faulty_cases/b_sum"):
    names = ["numpy", *(a.replace("_", "-") for a in adapters)]
    assert doc["complete"] is True
    assert sorted(by_key) == sorted((a, c) for a in names for c in CASE_IDS)
    for (adapter, case_id), x in by_key.items():
        if adapter == "numpy" or case_id != faulty_case:
            assert x["status"] == "pass", (adapter, case_id, x["message"])


def test_in_process_faults_are_errors_and_the_run_goes_on(cli, tmp_path):
    adapters = [
        "raises", "returns_none", "returns_list", "wrong_loss_shape", "wrong_dtype",
        "wrong_grad_shape", "torch_requires_grad", "mutates_inputs", "hangs",
    ]  # fmt: skip
    r, doc, by_key = _run(cli, tmp_path, adapters, "--timeout", "1")
    assert r.returncode == 1
    _check_everything_else_passed(doc, by_key, adapters)
    got = {a: (x["status"], x["message"]) for (a, c), x in by_key.items() if c.endswith("b_sum")}
    assert got["raises"] == (
        "error",
        "raised RuntimeError: kernel launch failed: out of shared memory",
    )
    assert got["returns-none"] == (
        "error",
        "returned a NoneType: expected adapters.Output(loss, grad)",
    )
    assert got["returns-list"] == ("error", "loss is a list: expected a NumPy array or float")
    assert got["wrong-loss-shape"] == ("error", "loss has shape (2,), expected ()")
    assert got["wrong-dtype"] == (
        "error",
        "loss has dtype float32, expected float64 for a float64 case",
    )
    assert got["wrong-grad-shape"] == ("error", "grad has shape (3, 2), expected (2, 3)")
    status, message = got["torch-requires-grad"]
    assert status == "error"
    assert message.startswith("loss is a torch.Tensor that NumPy cannot read (RuntimeError: ")
    assert message.endswith("return a NumPy array")
    assert got["mutates-inputs"] == (
        "error",
        "modified its input 'logits' (6 of 6 elements) in place: an implementation must not "
        "write to its inputs (copy them first) (otherwise: pass)",
    )
    assert got["hangs"] == (
        "timeout",
        "--timeout 1: still running after 1 s (abandoned in its thread, not killed)",
    )
    assert doc["summary"] == {"error": 8, "pass": 21, "timeout": 1}


def test_without_isolation_a_poisoned_process_fails_every_later_call(cli, tmp_path):
    r, _, by_key = _run(cli, tmp_path, ["poisoned_context"])
    assert r.returncode == 1
    assert by_key[("poisoned-context", "faulty_cases/b_sum")]["status"] == "error"
    later = by_key[("poisoned-context", "faulty_cases/c_none")]
    assert later["status"] == "error" and "device-side assert" in later["message"]


def test_isolated_crashes_cost_one_result_each_and_workers_restart(cli_process, tmp_path):
    """Worker processes that crash: the harness itself runs in a process of its own."""
    adapters = [
        "segfault", "exits", "aborts", "hangs_holding_gil", "eats_memory", "poisoned_context",
    ]  # fmt: skip
    # the hang costs the whole --timeout; each worker's first call (its start-up) is allowed
    # the warm-up time, and a later call of these cases takes milliseconds, but on a loaded
    # machine (a cold CI run: numba compiling on the other core) much more: 3 s leaves room
    options = ("--isolate", "--timeout", "3", "--memory-limit", "1G")
    r, doc, by_key = _run(cli_process, tmp_path, adapters, *options)
    assert r.returncode == 1
    # every other case and adapter, including each faulty adapter's case after its crash
    _check_everything_else_passed(doc, by_key, adapters)
    got = {a: (x["status"], x["message"]) for (a, c), x in by_key.items() if c.endswith("b_sum")}
    status, message = got["segfault"]
    assert status == "crash"
    assert message.startswith(
        "the worker process was killed by SIGSEGV (signal 11) during this call "
        "(restarted for the next); Fatal Python error: Segmentation fault"
    )
    assert 'segfault.py", line 18 in run' in message  # where it crashed
    assert got["exits"] == (
        "crash",
        "the worker process exited with code 3 during this call (restarted for the next)",
    )
    assert got["aborts"][0] == "crash"
    assert got["aborts"][1].startswith("the worker process was killed by SIGABRT (signal 6)")
    assert got["hangs-holding-gil"] == (
        "timeout",
        "--timeout 3: the worker process was killed, and restarted",
    )
    status, message = got["eats-memory"]
    assert status == "error" and message.startswith("raised MemoryError: ")
    assert message.endswith("(the worker's --memory-limit is 1G)")
    poisoned = by_key[("poisoned-context", "faulty_cases/b_sum")]
    assert poisoned["notes"] == ["the worker was restarted: this error leaves a process unusable"]
    assert doc["summary"] == {"crash": 3, "error": 2, "pass": 15, "timeout": 1}


def test_isolation_options_are_checked(cli):
    for args, message in [
        (["--memory-limit", "2G"], "--memory-limit applies to worker processes: add --isolate"),
        (["--isolate", "--memory-limit", "lots"], "expected a size such as 4G, 512M or 'none'"),
        (["--isolate", "--memory-limit", "1M"], "below 256M a worker cannot even start"),
        (["--timeout", "0"], "'0' must be > 0 seconds"),
    ]:
        r = cli("--cases", CASES, *args)
        assert r.returncode == 2, args
        assert message in r.stderr and "Traceback" not in r.output


def test_isolated_worker_that_cannot_load_is_an_adapter_error(cli, tmp_path, monkeypatch):
    from harness.execution import registry

    (tmp_path / "needs_env.py").write_text(
        "import os\n"
        "from harness.adapters.numpy_ref import NumpyAdapter\n\n\n"
        "class NeedsEnv(NumpyAdapter):\n"
        "    name = 'needs-env'\n\n"
        "    def load(self):\n"
        "        if os.environ.get('LOSSCONF_TEST_IN_WORKER'):\n"
        "            raise ImportError('libfancy.so: cannot open shared object file')\n"
    )
    # the parent (this process) loads it before the workers start; the worker then inherits
    # the variable
    real = registry.load

    def load(spec):
        adapter = real(spec)
        monkeypatch.setenv("LOSSCONF_TEST_IN_WORKER", "1")
        return adapter

    monkeypatch.setattr(registry, "load", load)
    r = cli("--cases", CASES, "--isolate", "--adapter", str(tmp_path / "needs_env.py"), cwd=REPO)
    assert r.returncode == 2, r.stderr
    assert (
        "lossconf: error: --isolate: adapter 'needs-env' cannot run in a worker process "
        "(--memory-limit 8G): AdapterLoadError: adapter 'needs-env' cannot run here: "
        "ImportError: libfancy.so: cannot open shared object file"
    ) in r.stderr
