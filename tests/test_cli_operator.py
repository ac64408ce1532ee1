"""`domas catalogue proposal|beamtime|import|embargo|release|history` on the embedded catalogue."""

from __future__ import annotations

import json

import pytest

from domas.catalogue import Dataset, open_catalogue
from domas.cli import main
from domas.config import CatalogueConfig


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("DOMAS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("DOMAS_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    with open_catalogue(CatalogueConfig(), tmp_path / "state") as cat:
        pids = [cat.upsert_dataset(Dataset("BT1", f"/B1/202611/Data/BT1/{a}", data_type=a)).pid
                for a in ("raw", "processed")]
    return tmp_path / "state", pids


def _cat(state_dir):
    return open_catalogue(CatalogueConfig(), state_dir)


def test_import_csv_then_json_sets_only_the_cells_given(state, tmp_path, capsys):
    state_dir, _ = state
    (tmp_path / "uo.csv").write_text("proposal,title,proposal_pi,beamtime,beamline,pi,team,start,end\n"
                                     "P-1,Cathodes,Ada,BT1,B1,Grace,Linus;Ken,2026-11-01,2026-11-04\n"
                                     "P-2,Anodes,Bob,,,,,,\n")
    assert main(["catalogue", "import", str(tmp_path / "uo.csv"), "--by", "uo-sync"]) == 0
    assert "imported 2 proposal row(s) and 1 beamtime row(s)" in capsys.readouterr().out
    (tmp_path / "uo.json").write_text(json.dumps([{"beamtime": "BT1", "pi": "Barbara"}]))
    assert main(["catalogue", "import", str(tmp_path / "uo.json")]) == 0
    with _cat(state_dir) as cat:
        bt = cat.get_beamtime("BT1")
        assert (bt.proposal, bt.pi, bt.team, bt.start) == ("P-1", "Barbara", ("Linus", "Ken"), 1793491200.0)
        assert (cat.get_proposal("P-2").title, cat.get_proposal("P-2").pi) == ("Anodes", "Bob")


def test_embargo_a_beamtime_release_one_and_read_the_history(state, capsys):
    state_dir, (raw, processed) = state
    assert main(["catalogue", "embargo", "--beamtime", "BT1", "--until", "2030-01-01", "--by", "ops"]) == 0
    assert main(["catalogue", "release", processed, "--by", "ops2"]) == 0
    with _cat(state_dir) as cat:
        assert cat.get_dataset(raw).state == "embargoed" and cat.get_dataset(raw).embargo_end == 1893456000.0
        assert cat.get_dataset(processed).state == "released"
    capsys.readouterr()
    assert main(["catalogue", "history", processed, "--json"]) == 0
    hist = json.loads(capsys.readouterr().out)
    assert [(h["who"], h["field"], h["new"]) for h in hist][-2:] == [("ops2", "state", "released"),
                                                                      ("ops2", "embargo_end", hist[-1]["new"])]
    assert main(["catalogue", "history", raw]) == 0
    assert "ops" in capsys.readouterr().out


@pytest.mark.parametrize("argv, code, sentence", [
    (["catalogue", "embargo", "--until", "2030-01-01"], 2, "give one dataset PID or --beamtime ID"),
    (["catalogue", "embargo", "nope", "--until", "2030-01-01"], 3, "dataset nope is not in the catalogue"),
    (["catalogue", "embargo", "--beamtime", "BT1", "--until", "soon"], 2, "--until 'soon' is not a date"),
    (["catalogue", "beamtime", "set", "BT1", "--start", "2026-11-05", "--end", "2026-11-01"], 2, "is before start"),
    (["catalogue", "history", "nothing"], 3, "neither a dataset PID"),
])
def test_mistakes_are_one_sentence(state, capsys, argv, code, sentence):
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and sentence in err, err
