"""A tier this host cannot write (mounted read-only): the controller cannot put its marker file there
and probes it by stat, so /metrics reads it up; the scrubber must agree, not call it "not mounted?".

Real files, the controller's own probe and a real scrubber over a SQLite catalogue, in a child
process that cannot override file modes (as root it runs under setpriv without CAP_DAC_OVERRIDE).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

DROP_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]

CHILD = r"""
import json, logging, sys, zlib
from pathlib import Path

from domas.archive.scrub import Scrubber, tier_marked
from domas.catalogue.base import Dataset, FileRecord, Replica
from domas.catalogue.sqlite import SQLiteCatalogue
from domas.controller.tiers import probe_root

work = Path(sys.argv[1])
root, empty = work / "tape", work / "empty"
said = []
handler = logging.Handler()
handler.emit = lambda record: said.append(record.getMessage())
logging.getLogger("domas.scrub").addHandler(handler)
cat = SQLiteCatalogue(str(work / "cat.db"))
ds = cat.upsert_dataset(Dataset(beamtime="bt1", path="/B1/202611/Data/BT1/raw"))
data = (root / ds.path.strip("/") / "a.h5").read_bytes()
cat.upsert_file(FileRecord(ds.pid, "a.h5", len(data), adler32=f"{zlib.adler32(data):08x}", mtime=1.0,
                           replicas={"tape": Replica("verified", "x", 100.0)}))
now = [1000.0]
scrub = Scrubber(cat, lambda tier, pid, path: str(root / ds.path.strip("/") / path), interval=500.0,
                 rate=8 << 20, tiers=("tape",), clock=lambda: now[0], present=lambda tier: tier_marked(str(root)))
results = []
for i in range(3):
    now[0] += 600.0
    results.append([r for _, r in scrub.run_once()])
print(json.dumps({"probe": list(probe_root(str(root), mark=True)), "marked": tier_marked(str(root)),
                  "writable_unmarked": tier_marked(str(empty)), "results": results, "said": said}))
cat.close()
"""


def test_a_read_only_tier_the_controller_reads_up_is_scrubbed_not_called_unmounted(tmp_path):
    """Was: the controller's probe found it up (by stat: no marker can be written), while the
    scrubber logged 'the tape tier's root has no marker file .domas-tier (not mounted?)' and never
    checked its copies."""
    root = tmp_path / "tape"
    f = root / "B1" / "202611" / "Data" / "BT1" / "raw" / "a.h5"
    f.parent.mkdir(parents=True)
    f.write_bytes(os.urandom(4096))
    (tmp_path / "empty").mkdir()                     # a writable root without the marker: not mounted
    root.chmod(0o555)
    tmp_path.chmod(0o777)                            # the child writes the catalogue here
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    cmd = [sys.executable, str(script), str(tmp_path)]
    try:
        out = subprocess.run(DROP_DAC + cmd if os.geteuid() == 0 else cmd, capture_output=True, text=True,
                             timeout=60, cwd=Path(__file__).resolve().parent.parent)
    finally:
        root.chmod(0o755)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["probe"] == [True, "", ""], "the controller probes it by stat and finds it up"
    assert got["marked"] is True and got["writable_unmarked"] is False
    assert got["results"] == [["ok"], ["ok"], ["ok"]], got
    assert not [m for m in got["said"] if "not mounted" in m], got["said"]
    assert not (root / ".domas-tier").exists()
