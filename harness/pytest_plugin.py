"""The pytest plugin: ``pytest --lossconf-adapter torch`` runs the suite as pytest tests.

Registered through the ``pytest11`` entry point. It stays inert (adds options,
collects nothing) unless ``--lossconf-adapter`` is given, and importing it
imports no framework: adapters load when their items are collected.

The options are those of the CLI (``harness.options.RUN_OPTIONS``) with a
``--lossconf-`` prefix: ``--lossconf-adapter``, ``--lossconf-cases``,
``--lossconf-keyword`` (alias ``--lossconf-k``), ``--lossconf-dtype``,
``--lossconf-expectations``, ... Each case x adapter x dtype becomes one item
``lossconf::<case id>[<adapter>-<dtype>]``, with the case's tags as keywords,
so pytest's own ``-k``, ``--junitxml`` and pytest-xdist ``-n`` work as usual.

Outcomes: pass and raised pass; unsupported skips; a non-conformity an
expectation allows is xfail (XPASS when it conforms after all); anything
else fails with the message and a repro snippet.
"""

from __future__ import annotations

import argparse

import pytest

from harness.options import RUN_OPTIONS

PREFIX = "lossconf-"
#: options the plugin does not honour (pytest has its own reports)
CLI_ONLY = frozenset({"report", "baseline", "growth-factor", "jobs"})  # jobs: use xdist -n


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("lossconf", "lossconf cross-entropy conformance suite")
    for opt in RUN_OPTIONS:
        if opt.name in CLI_ONLY:
            continue
        flags = [f"--{PREFIX}{opt.name}"]
        if opt.short:
            flags.append(f"--{PREFIX}{opt.short.lstrip('-')}")
        group.addoption(*flags, dest=f"lossconf_{opt.dest}", help=opt.help, **opt.kwargs)


def _namespace(config: pytest.Config) -> argparse.Namespace:
    """The plugin's options as the CLI's argparse namespace (same dest names)."""
    ns = argparse.Namespace(list=False, quiet=True, verbose=False, reports=None, baseline=None)
    for opt in RUN_OPTIONS:
        if opt.name not in CLI_ONLY:
            setattr(ns, opt.dest, config.getoption(f"lossconf_{opt.dest}"))
    return ns


class NonConformance(Exception):
    """A result that does not conform."""


class ExpectedNonConformance(NonConformance):
    """A non-conformity that an expectation allows (turned into xfail)."""


def _plan(config: pytest.Config):
    from harness.errors import LossconfError
    from harness.gate import adapter_info
    from harness.run_command import prepare

    args = _namespace(config)
    try:
        plan = prepare(args)
        expectations = None
        if args.expectations:
            from harness.expectations import load

            expectations = load(args.expectations)
    except LossconfError as e:
        raise pytest.UsageError(f"lossconf: {e}") from None
    infos = {a.name: adapter_info(a, s) for a, s in zip(plan.adapters, args.adapters, strict=True)}
    return plan, expectations, infos


class LossconfItem(pytest.Item):
    def __init__(self, *, case, adapter, dtype, spec, entry, **kwargs) -> None:
        super().__init__(**kwargs)
        self.case, self.adapter, self.dtype, self.spec, self.entry = (
            case,
            adapter,
            dtype,
            spec,
            entry,
        )
        for tag in case.tags:
            self.extra_keyword_matches.add(tag)
        self.extra_keyword_matches.update({adapter.name, dtype})
        if entry is not None and not entry.allows_conforming:
            self.add_marker(
                pytest.mark.xfail(reason=entry.reason, raises=ExpectedNonConformance, strict=False)
            )

    def runtest(self) -> None:
        from harness.runner import run_one

        r = run_one(self.case, self.adapter, self.dtype)
        self.user_properties.append(("lossconf_status", r.status.value))
        if r.status.value == "unsupported":
            pytest.skip(f"unsupported: {r.message}")
        if r.conforming:
            return
        allowed = self.entry is not None and r.status.value in self.entry.outcomes
        if allowed and self.entry.allows_conforming:
            pytest.xfail(f"expected {r.status.value}: {self.entry.reason}")
        from harness.repro import snippet

        text = (
            f"{r.status.value}: {r.message}\n\nrepro:\n{snippet(self.case, self.spec, self.dtype)}"
        )
        raise (ExpectedNonConformance if allowed else NonConformance)(text)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, NonConformance):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return (
            self.case.file,
            self.case.line,
            f"lossconf {self.case.id} [{self.adapter.name}-{self.dtype}]",
        )


class LossconfSuite(pytest.Collector):
    """The parent node of every lossconf item (node id ``lossconf``)."""

    def collect(self):
        return []


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list
) -> None:
    """Append one item per case x adapter x dtype before pytest's -k deselects."""
    if not config.getoption("lossconf_adapters"):
        return
    plan, expectations, infos = _plan(config)
    suite = LossconfSuite.from_parent(session, name="lossconf", nodeid="lossconf")
    for case in plan.cases:
        for adapter in plan.adapters:
            for dtype in case.dtypes:
                from harness.results import Result, Status

                probe = Result(case.id, adapter.name, dtype, Status.PASS)
                entry = (
                    None if expectations is None else expectations.match(probe, infos[adapter.name])
                )
                items.append(
                    LossconfItem.from_parent(
                        suite,
                        name=f"{case.id}[{adapter.name}-{dtype}]",
                        case=case,
                        adapter=adapter,
                        dtype=dtype,
                        spec=infos[adapter.name]["spec"],
                        entry=entry,
                    )
                )


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    specs = config.getoption("lossconf_adapters")
    return [f"lossconf: adapters {', '.join(specs)}"] if specs else None
