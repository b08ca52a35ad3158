"""OpenMP's idle threads sleep in a lossconf run (``harness.openmp``): the command line and
the pytest plugin, when it runs cases, set ``OMP_WAIT_POLICY=PASSIVE`` before any framework
loads, and keep a value the user set."""

from __future__ import annotations

import os
from types import SimpleNamespace

from harness import pytest_plugin
from harness.openmp import VARIABLE


def test_the_command_line_makes_idle_threads_sleep(cli, monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    assert cli("--list").returncode == 0
    assert os.environ[VARIABLE] == "PASSIVE"


def test_a_policy_the_user_set_is_kept(cli, monkeypatch):
    monkeypatch.setenv(VARIABLE, "ACTIVE")
    assert cli("--list").returncode == 0
    assert os.environ[VARIABLE] == "ACTIVE"


def test_the_plugin_sets_it_only_in_a_session_that_runs_cases(monkeypatch):
    monkeypatch.delenv(VARIABLE, raising=False)
    options = {"lossconf_adapters": []}
    config = SimpleNamespace(getoption=options.__getitem__)
    pytest_plugin.pytest_configure(config)
    assert VARIABLE not in os.environ  # lossconf's plugin is inert in other sessions
    options["lossconf_adapters"] = ["numpy"]
    pytest_plugin.pytest_configure(config)
    assert os.environ[VARIABLE] == "PASSIVE"
