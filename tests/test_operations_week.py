"""The operations test, short form: a facility's week in a few minutes (tests/operations_week.py
holds the scenario; benchmarks/bench_operations_week.py runs the long form).

Faults survived, in order, with new files after each: controller SIGTERM + restart, controller
kill -9 + restart, an agent killed, the MongoDB-wire catalogue down and back, the tape tier
(XRootD) down and back, an operator's embargo and PI followed by new files and a new dataset,
the separate parts replaced by `domas up` on the same state, `domas up` killed and restarted.
"""

from __future__ import annotations

import json

from tests.operations_week import run_week


def test_a_week_of_operations(tmp_path, secantus_factory, private_xrootd):
    week = run_week(tmp_path, secantus_factory, private_xrootd)
    try:
        problems = week.verdict()
    finally:
        week.close()
    print(json.dumps(week.fig.as_dict()))
    assert problems == [], "\n".join(problems[:30])
    assert week.fig.files >= 40 and len(week.fig.faults) == 8
    assert week.fig.beamline_copies_expired > 0, "the beamline retention ran (and was watched)"
