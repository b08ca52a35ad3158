"""OpenMP threads that sleep when idle, instead of spinning, in a run of lossconf.

torch's CPU kernels run on OpenMP, whose threads by default keep spinning for a while after
each parallel region, waiting for the next one. A conformance run makes thousands of small
calls, each a few short parallel regions, with the harness's own work between them; on a
machine whose cores are all busy (a CI runner with other jobs, pytest-xdist workers, the
tests of other checkouts) the spinning threads take the cores the next call needs, and every
call waits for them. ``OMP_WAIT_POLICY=PASSIVE`` makes idle threads sleep. The speed of one
large call is unaffected: its regions are long, and a thread wakes once per region.

OpenMP reads the variable once, when its runtime loads (with torch), so it is set before
lossconf imports any framework: at the start of the command line (``harness.cli.main``) and
when the pytest plugin runs cases. Worker processes (``--jobs``, ``--isolate``, the ranks of
vocab-parallel runs) inherit it. A value the user set is kept; in a pytest session that
imported torch before the plugin configured itself (in a conftest), the runtime has already
read its setting.
"""

from __future__ import annotations

import os

VARIABLE = "OMP_WAIT_POLICY"


def idle_threads_sleep() -> None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets it."""
    os.environ.setdefault(VARIABLE, "PASSIVE")
