"""The pytest plugin: ``pytest --lossconf-adapter torch`` runs the suite as pytest tests.

Registered through the ``pytest11`` entry point. It stays inert (adds options,
collects nothing) unless ``--lossconf-adapter`` is given, and importing it
imports no framework: adapters load when their items are collected.

The options are those of the CLI (``harness.cli.options.RUN_OPTIONS``) with a
``--lossconf-`` prefix: ``--lossconf-adapter``, ``--lossconf-cases``,
``--lossconf-keyword`` (alias ``--lossconf-k``), ``--lossconf-case``, ``--lossconf-dtype``,
``--lossconf-expectations``, ... Each case x adapter x dtype becomes one item
``lossconf::<case id>[<adapter>-<dtype>]``, with the case's tags as keywords,
so pytest's own ``-k``, ``--junitxml`` and pytest-xdist ``-n`` work as usual.

Outcomes: pass and raised pass; unsupported skips; a non-conformity an
expectation allows is xfail (XPASS when it conforms after all); anything
else fails with the message and a repro snippet.

A run of consecutive items takes a shorter protocol than pytest's (``_light_protocol``):
an item has no fixtures and no setup or teardown of its own, so pytest's per-phase
hooks (``pytest_runtest_setup``/``_call``/``_teardown``, with the capture, logging and
warning handling each brings), which cost more than a small case's whole checked call,
are left out. The item runs within pytest's output capture, each phase's report is made
by pytest's ``pytest_runtest_makereport`` hook and goes to ``pytest_runtest_logreport``,
so the terminal, ``--junitxml``, ``-x``, ``--lf`` and pytest-xdist see what they would.
Items that need more take pytest's own protocol: the first and last of a run (they set
up and tear down the parent nodes), items with markers (an expectation's xfail, a
user's skip), and every item under ``--pdb``, ``--runxfail`` or
``--setup-show``/``--setup-only``/``--setup-plan``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.cli.options import RUN_OPTIONS
from harness.errors import LossconfError
from harness.execution.config import RunConfig
from harness.openmp import idle_threads_sleep

if TYPE_CHECKING:
    # pytest's own names for what repr_failure takes and gives (not exported by pytest)
    from _pytest._code.code import TerminalRepr, TracebackStyle

    from harness.adapters import Adapter
    from harness.cases.model import Case
    from harness.execution.session import Plan
    from harness.execution.vocab_parallel import VocabParallelPool
    from harness.gate.expectations import Entry, Expectations

# The plugin loads in every pytest session of an environment that has lossconf, and is
# inert there unless --lossconf-adapter is given: what runs cases (NumPy, YAML, the oracle)
# is imported by the functions that run them, off pytest's start-up path.

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


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("lossconf_adapters"):  # this session runs cases (harness.openmp)
        idle_threads_sleep()


def run_config(config: pytest.Config) -> RunConfig:
    """The run configuration of the plugin's options (the CLI's, without CLI_ONLY)."""
    values = {
        opt.dest: config.getoption(f"lossconf_{opt.dest}")
        for opt in RUN_OPTIONS
        if opt.name not in CLI_ONLY
    }
    return RunConfig.from_options(values, quiet=True)


class NonConformance(Exception):
    """A result that does not conform."""


class ExpectedNonConformance(NonConformance):
    """A non-conformity that an expectation allows (turned into xfail)."""


def _plan(config: pytest.Config) -> tuple[Plan, Expectations | None, dict[str, dict[str, str]]]:
    # lazily, off pytest's start-up (see the note at the top)
    from harness.execution.registry import describe
    from harness.execution.session import prepare
    from harness.gate import expectations as expectations_file

    try:
        run = run_config(config)
        plan = prepare(run)
        expectations = None
        if run.expectations is not None:
            expectations = expectations_file.load(run.expectations)
    except LossconfError as e:
        raise pytest.UsageError(f"lossconf: {e}") from None
    infos = {a.name: describe(a, s) for a, s in zip(plan.adapters, plan.specs, strict=True)}
    return plan, expectations, infos


class LossconfItem(pytest.Item):
    def __init__(
        self,
        *,
        case: Case,
        adapter: Adapter,
        dtype: str,
        spec: str,
        entry: Entry | None,
        ranks: VocabParallelPool | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ranks = ranks  # with --lossconf-world-size: the session's rank groups
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
        from harness.execution.runner import run_one  # lazily (see the note at the top)

        if self.ranks is not None:
            r = self.ranks.run_one(self.case, self.adapter, self.dtype, timeout=self.ranks.timeout)
        else:
            r = run_one(self.case, self.adapter, self.dtype)
        self.user_properties.append(("lossconf_status", r.status.value))
        if r.status.value == "unsupported":
            pytest.skip(f"unsupported: {r.message}")
        if r.conforming:
            return
        entry = self.entry
        allowed = entry is not None and r.status.value in entry.outcomes
        if allowed and entry is not None and entry.allows_conforming:
            pytest.xfail(f"expected {r.status.value}: {entry.reason}")
        from harness.reports.repro import snippet  # lazily (see the note at the top)

        text = (
            f"{r.status.value}: {r.message}\n\nrepro:\n{snippet(self.case, self.spec, self.dtype)}"
        )
        raise (ExpectedNonConformance if allowed else NonConformance)(text)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, NonConformance):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return (
            self.case.file,
            self.case.line,
            f"lossconf {self.case.id} [{self.adapter.name}-{self.dtype}]",
        )


class LossconfSuite(pytest.Collector):
    """The parent node of every lossconf item (node id ``lossconf``)."""

    def collect(self) -> list[pytest.Item]:
        return []


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list
) -> None:
    """Append one item per case x adapter x dtype before pytest's -k deselects."""
    if not config.getoption("lossconf_adapters"):
        return
    from harness.execution.results import Result, Status  # lazily (see the note at the top)

    plan, expectations, infos = _plan(config)
    ranks = _rank_groups(config, plan)
    suite = LossconfSuite.from_parent(session, name="lossconf", nodeid="lossconf")
    for case in plan.cases:
        for adapter in plan.adapters:
            for dtype in case.dtypes:
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
                        ranks=ranks,
                    )
                )


def _rank_groups(config: pytest.Config, plan: Plan) -> VocabParallelPool | None:
    """With ``--lossconf-world-size R``: the rank groups the items share (started on their
    first call, stopped when pytest ends), else None."""
    world_size = config.getoption("lossconf_world_size")
    if world_size is None:
        return None
    # lazily, off pytest's start-up (see the note at the top)
    from harness.execution.vocab_parallel import VocabParallelPool

    timeout = config.getoption("lossconf_timeout")
    pool = VocabParallelPool(plan.specs, plan.adapters, world_size, timeout)
    config.add_cleanup(pool.close)
    return pool


#: pytest options under which every item takes pytest's own protocol
_FULL_PROTOCOL_OPTIONS = ("usepdb", "runxfail", "setupshow", "setuponly", "setupplan")


def _light(item: pytest.Item, nextitem: pytest.Item | None) -> bool:
    """Whether ``item`` may take the light protocol: a plain lossconf item between two
    lossconf items (pytest's protocol of the one before left the parent nodes set up,
    and the one after keeps them)."""
    return (
        isinstance(item, LossconfItem)
        and isinstance(nextitem, LossconfItem)
        and item.stash.get(_PARENTS_READY, False)
        and not item.own_markers
        and not _full_protocol(item.config)
    )


_FULL_PROTOCOL = pytest.StashKey[bool]()


def _full_protocol(config: pytest.Config) -> bool:
    """Whether one of ``_FULL_PROTOCOL_OPTIONS`` is set (read once per session)."""
    if _FULL_PROTOCOL not in config.stash:
        config.stash[_FULL_PROTOCOL] = any(
            config.getoption(name, False) for name in _FULL_PROTOCOL_OPTIONS
        )
    return config.stash[_FULL_PROTOCOL]


#: set on an item once pytest's protocol has run the item before it in the same run of
#: lossconf items (so the session and the suite node are set up, nothing else is)
_PARENTS_READY = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
    if isinstance(nextitem, LossconfItem):
        # whichever protocol ``item`` takes, it leaves the suite node set up for nextitem
        nextitem.stash[_PARENTS_READY] = isinstance(item, LossconfItem)
    if not _light(item, nextitem):
        return None
    _light_protocol(item)
    return True


def _light_protocol(item: pytest.Item) -> None:
    """pytest's runtest protocol for an item without fixtures, markers or setup: logstart,
    a report per phase through the makereport hook, logfinish. The phases' own hooks
    (``pytest_runtest_setup``, ``_call``, ``_teardown``) are left out: the call runs the
    item directly, within pytest's output capture (the call hook's implementations need
    what the setup hook's store)."""
    ihook = item.ihook
    ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    reraise: tuple[type[BaseException], ...] = (pytest.exit.Exception, KeyboardInterrupt)
    capture = item.config.pluginmanager.getplugin("capturemanager")
    for when in ("setup", "call", "teardown"):
        if when != "call":
            call = pytest.CallInfo.from_call(_nothing, when=when, reraise=reraise)
        elif capture is None:
            call = pytest.CallInfo.from_call(item.runtest, when=when, reraise=reraise)
        else:
            with capture.item_capture(when, item):
                call = pytest.CallInfo.from_call(item.runtest, when=when, reraise=reraise)
        ihook.pytest_runtest_logreport(report=ihook.pytest_runtest_makereport(item=item, call=call))
    ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)


def _nothing() -> None:
    """The setup and teardown of a lossconf item."""


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    specs = config.getoption("lossconf_adapters")
    return [f"lossconf: adapters {', '.join(specs)}"] if specs else None
