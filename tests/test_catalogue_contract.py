"""One contract every Catalogue backend passes: SQLite (embedded), MongoDB (SecantusDB or real), and
SpooledCatalogue (the write spool the archiver and data service put in front of either; here over SQLite)."""

from __future__ import annotations

import pytest

from domas.catalogue import sqlite as sqlite_mod
from domas.catalogue.base import Beamtime, Dataset, FileRecord, Proposal, Replica, ReplicaUpdate
from domas.catalogue.pid import dataset_pid
from domas.catalogue.spool import SpooledCatalogue
from domas.errors import InvalidMessage, NotFound

BACKENDS = ["sqlite", "mongo", "spooled"]


@pytest.fixture(params=BACKENDS)
def catalogue(request, tmp_path):
    if request.param == "sqlite":
        cat = sqlite_mod.SQLiteCatalogue(tmp_path / "cat.sqlite")
        yield cat
        cat.close()
    elif request.param == "spooled":
        cat = SpooledCatalogue(sqlite_mod.SQLiteCatalogue(tmp_path / "cat.sqlite"), tmp_path / "spool")
        yield cat
        assert cat.pending() == 0 and cat.rejected() == [], "a reachable catalogue took every write at once"
        cat.close()
    else:
        yield request.getfixturevalue("mongo_catalogue")


def reopen(cat):
    """A second catalogue object on the same store, as after a restart."""
    if isinstance(cat, SpooledCatalogue):
        return SpooledCatalogue(reopen(cat.inner), cat.path.parent)
    if isinstance(cat, sqlite_mod.SQLiteCatalogue):
        return sqlite_mod.SQLiteCatalogue(cat.path)
    from domas.catalogue.mongo import MongoCatalogue

    return MongoCatalogue(cat._url, database=cat._db.name)


def corrupt_counters(cat, pid):
    if isinstance(cat, SpooledCatalogue):
        cat = cat.inner
    if isinstance(cat, sqlite_mod.SQLiteCatalogue):
        with cat._tx() as db:
            db.execute("UPDATE datasets SET file_count=99, bytes=-5 WHERE pid=?", (pid,))
    else:
        cat._db.datasets.update_one({"_id": pid}, {"$set": {"file_count": 99, "bytes": -5}})


def dataset(cat, beamtime="bt1", path="/data/b1/scan1", **kw) -> Dataset:
    return cat.upsert_dataset(Dataset(beamtime=beamtime, path=path, **kw))


def f(pid, path, size=10, adler="0000abcd", xxh="", **kw) -> FileRecord:
    return FileRecord(dataset=pid, path=path, size=size, adler32=adler, xxh3=xxh, mtime=1.5, **kw)


def test_proposal_and_beamtime_round_trip_and_update(catalogue):
    catalogue.upsert_proposal(Proposal("P1", "Old title", ""))
    catalogue.upsert_proposal(Proposal("P1", "Crystal growth", "Ada"))        # fills only the empty PI
    assert catalogue.get_proposal("P1") == Proposal("P1", "Old title", "Ada")
    catalogue.upsert_proposal(Proposal("P1", "Crystal growth", "Ada"), overwrite=True)
    bt = Beamtime("bt1", "B1", "P1", "Grace", ("Grace", "Linus"), 100.0, 200.0)
    catalogue.upsert_beamtime(bt)
    catalogue.upsert_beamtime(bt)
    assert catalogue.get_proposal("P1") == Proposal("P1", "Crystal growth", "Ada")
    assert catalogue.get_beamtime("bt1") == bt
    assert catalogue.get_proposal("nope") is None and catalogue.get_beamtime("nope") is None


def test_dataset_gets_stable_pid_and_keeps_created_at(catalogue):
    first = dataset(catalogue, metadata={"sample": {"name": "Si"}}, created_at=1000.0)
    assert first.pid == dataset_pid("CSTR:17058.11.HEPS", "bt1", "/data/b1/scan1")
    assert first.pid.startswith("CSTR:17058.11.HEPS.bt1.")
    again = dataset(catalogue, state="closed", metadata={"sample": {"name": "Ge"}, "title": "t"}, created_at=2000.0)
    assert again.pid == first.pid and again.created_at == 1000.0
    assert again.state == "open" and again.metadata == {"sample": {"name": "Si"}, "title": "t"}   # fills only
    other = dataset(catalogue, path="/data/b1/scan2")
    assert other.pid != first.pid
    assert catalogue.dataset_by_path("/data/b1/scan1") == again
    assert catalogue.get_dataset("CSTR:none") is None


def test_metadata_is_stored_as_plain_json_with_safe_keys(catalogue):
    meta = {"sample": {"name": "Si", "dims": (2, 3)}, "a.b": {"$gt": 1}, "when": object.__name__}
    got = dataset(catalogue, metadata=meta).metadata
    assert got == {"sample": {"name": "Si", "dims": [2, 3]}, "a_b": {"_gt": 1}, "when": "object"}


def test_pid_survives_a_restart(catalogue):
    pid = dataset(catalogue).pid
    later = reopen(catalogue)
    try:
        assert later.upsert_dataset(Dataset(beamtime="bt1", path="/data/b1/scan1")).pid == pid
        assert len(later.find_datasets()) == 1
    finally:
        later.close()


def test_explicit_pid_must_match_the_stored_one(catalogue):
    dataset(catalogue)
    with pytest.raises(InvalidMessage, match="already has the PID"):
        dataset(catalogue, pid="CSTR:17058.11.HEPS.other")


def test_counters_stay_right_under_repeated_upserts(catalogue):
    pid = dataset(catalogue).pid
    for _ in range(3):
        catalogue.upsert_file(f(pid, "a.h5", 10))
    catalogue.upsert_files([f(pid, "b.h5", 5), f(pid, "b.h5", 5), f(pid, "c/d.h5", 7)])
    got = catalogue.get_dataset(pid)
    assert (got.file_count, got.bytes) == (3, 22)
    catalogue.upsert_file(f(pid, "a.h5", 100, "11112222"))
    got = catalogue.get_dataset(pid)
    assert (got.file_count, got.bytes) == (3, 112)
    assert dataset(catalogue).file_count == 3          # re-upserting the dataset keeps its counters


def test_recount_repairs_counters(catalogue):
    pid = dataset(catalogue).pid
    catalogue.upsert_files([f(pid, "a", 3), f(pid, "b", 4)])
    corrupt_counters(catalogue, pid)
    fixed = catalogue.recount_dataset(pid)
    assert (fixed.file_count, fixed.bytes) == (2, 7)
    with pytest.raises(NotFound):
        catalogue.recount_dataset("CSTR:none")


def test_file_round_trip_with_replicas(catalogue):
    ds = dataset(catalogue)
    rec = f(ds.pid, "raw/a.h5", 10, "0000abcd", "0123456789abcdef",
            replicas={"beamline": Replica("verified", "file:///b1/a.h5", 5.0)})
    catalogue.upsert_file(rec)
    catalogue.set_replica(ds.pid, "raw/a.h5", "central", "verified", "root://eos//a.h5", 9.0)
    got = catalogue.get_file(ds.pid, "raw/a.h5")
    assert got.size == 10 and got.adler32 == "0000abcd" and got.xxh3 == "0123456789abcdef"
    assert got.mtime == 1.5 and got.beamtime == "bt1"
    assert got.replicas == {"beamline": Replica("verified", "file:///b1/a.h5", 5.0),
                            "central": Replica("verified", "root://eos//a.h5", 9.0)}
    assert catalogue.get_file(ds.pid, "nope") is None


def test_unknown_dataset_or_file_is_not_found(catalogue):
    with pytest.raises(NotFound, match="upsert the dataset"):
        catalogue.upsert_file(f("CSTR:none", "a"))
    pid = dataset(catalogue).pid
    with pytest.raises(NotFound, match="CSTR:none"):
        catalogue.upsert_files([f(pid, "first"), f("CSTR:none", "a")])
    assert catalogue.get_file(pid, "first") is None and catalogue.get_dataset(pid).file_count == 0
    with pytest.raises(NotFound):
        catalogue.set_replica(pid, "nope", "tape", "verified")
    with pytest.raises(NotFound):
        catalogue.set_dataset_state("CSTR:none", "closed")


@pytest.mark.parametrize("bad, match", [
    (dict(adler="ABC"), "adler32"),
    (dict(xxh="123"), "xxh3"),
    (dict(path="/abs"), "relative"),
    (dict(path="a/../../b"), "relative"),
    (dict(size=-1), "size"),
    (dict(replicas={"Tape!": Replica("verified")}), "tier"),
    (dict(replicas={"tape": Replica("maybe")}), "replica state"),
])
def test_bad_file_records_are_refused(catalogue, bad, match):
    pid = dataset(catalogue).pid
    args = dict(path="a.h5", size=1, adler="0000abcd", xxh="")
    args.update(bad)
    with pytest.raises(InvalidMessage, match=match):
        catalogue.upsert_file(f(pid, args.pop("path"), args.pop("size"), args.pop("adler"), args.pop("xxh"), **args))
    assert catalogue.get_dataset(pid).file_count == 0


@pytest.mark.parametrize("bad, match", [
    (dict(data_type="junk"), "data type"), (dict(path="relative/x"), "absolute"),
    (dict(path="/data/x/"), "normalised"), (dict(state="lost"), "dataset state"), (dict(beamtime=""), "beamtime"),
])
def test_bad_datasets_are_refused(catalogue, bad, match):
    with pytest.raises(InvalidMessage, match=match):
        dataset(catalogue, **bad)


def test_changed_content_makes_other_replicas_stale(catalogue):
    pid = dataset(catalogue).pid
    catalogue.upsert_file(f(pid, "a", 10, "0000abcd"))
    catalogue.set_replica(pid, "a", "central", "verified", "u1", 1.0)
    catalogue.set_replica(pid, "a", "tape", "deleted", "u2", 1.0)
    catalogue.upsert_file(f(pid, "a", 10, "0000abcd"))                  # same content: untouched
    assert catalogue.get_file(pid, "a").replicas["central"].state == "verified"
    catalogue.upsert_file(f(pid, "a", 10, "0000ffff", replicas={"beamline": Replica("verified", "b", 2.0)}))
    reps = catalogue.get_file(pid, "a").replicas
    assert reps["central"] == Replica("stale", "u1", 1.0)
    assert reps["tape"].state == "deleted" and reps["beamline"].state == "verified"


def test_checksums_fill_in_and_clear_by_content(catalogue):
    pid = dataset(catalogue).pid
    catalogue.upsert_file(f(pid, "a", 10, ""))                               # checksum not known yet
    catalogue.set_replica(pid, "a", "beamline", "verified", "b", 1.0)
    catalogue.upsert_file(f(pid, "a", 10, "0000abcd", "0123456789abcdef"))  # filled in: not a change
    got = catalogue.get_file(pid, "a")
    assert (got.adler32, got.xxh3, got.replicas["beamline"].state) == ("0000abcd", "0123456789abcdef", "verified")
    catalogue.upsert_file(f(pid, "a", 10, ""))                               # empty: keeps what is known
    assert catalogue.get_file(pid, "a").adler32 == "0000abcd"
    catalogue.upsert_file(f(pid, "a", 12, ""))                               # grew: old sums are wrong
    got = catalogue.get_file(pid, "a")
    assert (got.size, got.adler32, got.xxh3, got.replicas["beamline"].state) == (12, "", "", "stale")
    assert catalogue.get_dataset(pid).bytes == 12


def test_lifecycle_queries_by_replica_state(catalogue):
    one = dataset(catalogue, "bt1", "/data/one").pid
    two = dataset(catalogue, "bt2", "/data/two").pid
    catalogue.upsert_files([f(one, p) for p in ("a", "b", "c")] + [f(two, p) for p in ("x", "y")])
    catalogue.set_replica(one, "a", "tape", "verified", "t/a", 1.0)
    catalogue.set_replica(one, "b", "tape", "failed")
    catalogue.set_replica(two, "x", "tape", "verified", "t/x", 1.0)

    def names(it):
        return sorted(r.path for r in it)

    assert names(catalogue.files_by_replica_state("tape", "verified")) == ["a", "x"]
    assert names(catalogue.files_by_replica_state("tape", "verified", beamtime="bt2")) == ["x"]
    assert names(catalogue.files_by_replica_state("tape", "failed", dataset=one)) == ["b"]
    assert names(catalogue.files_lacking_replica("tape")) == ["b", "c", "y"]
    assert names(catalogue.files_lacking_replica("tape", dataset=one)) == ["b", "c"]
    assert names(catalogue.files_lacking_replica("central", beamtime="bt2")) == ["x", "y"]
    assert len(list(catalogue.files_lacking_replica("tape", limit=2))) == 2
    assert names(catalogue.files_by_replica_state("disk", "verified")) == []


def test_queries_page_through_many_files(catalogue, monkeypatch):
    monkeypatch.setattr(sqlite_mod, "PAGE", 3)
    pid = dataset(catalogue).pid
    paths = [f"f{i:02d}" for i in range(11)]
    catalogue.upsert_files([f(pid, p) for p in reversed(paths)])
    for p in paths[:7]:
        catalogue.set_replica(pid, p, "tape", "verified")
    assert [r.path for r in catalogue.files_of(pid)] == paths
    assert sorted(r.path for r in catalogue.files_by_replica_state("tape", "verified")) == paths[:7]
    assert sorted(r.path for r in catalogue.files_lacking_replica("tape")) == paths[7:]
    assert len(list(catalogue.files_lacking_replica("central", limit=5))) == 5


def test_find_datasets_by_beamtime_proposal_pi_since_and_path(catalogue):
    catalogue.upsert_proposal(Proposal("P1", "t", "Ada"))
    catalogue.upsert_proposal(Proposal("P2", "t", "Bob"))
    catalogue.upsert_beamtime(Beamtime("bt1", "B1", "P1", "Grace"))
    catalogue.upsert_beamtime(Beamtime("bt2", "B1", "P2", "Bob"))
    catalogue.upsert_beamtime(Beamtime("bt3", "B2", "P2", "Ada"))
    a = dataset(catalogue, "bt1", "/d/bt1/a", created_at=100.0).pid
    b = dataset(catalogue, "bt2", "/d/bt2/b", created_at=200.0).pid
    c = dataset(catalogue, "bt3", "/d/bt3/c", created_at=300.0).pid
    d = dataset(catalogue, "bt3", "/d/bt3/cc", created_at=400.0).pid

    def pids(**kw):
        return [x.pid for x in catalogue.find_datasets(**kw)]

    assert pids() == [d, c, b, a]                                      # newest first
    assert pids(beamtime="bt3") == [d, c]
    assert pids(proposal="P2") == [d, c, b]
    assert pids(pi="Ada") == [d, c, a]                                 # beamtime PI or proposal PI
    assert pids(pi="Grace") == [a]
    assert pids(pi="Bob", since=250.0) == [d, c]
    assert pids(proposal="P2", pi="Ada") == [d, c]
    assert pids(path_prefix="/d/bt3/c") == [c]                         # a directory, not a string prefix
    assert pids(path_prefix="/d/") == [d, c, b, a]
    assert pids(limit=1) == [d]
    assert pids(pi="Nobody") == [] and pids(proposal="P9") == []


def test_dataset_state_and_beamtime_move(catalogue):
    pid = dataset(catalogue, embargo_end=50.0).pid
    catalogue.upsert_file(f(pid, "a"))
    catalogue.set_dataset_state(pid, "archived")
    got = catalogue.get_dataset(pid)
    assert got.state == "archived" and got.embargo_end == 50.0
    catalogue.set_dataset_state(pid, "embargoed", embargo_end=99.0)
    assert catalogue.get_dataset(pid).embargo_end == 99.0
    with pytest.raises(InvalidMessage):
        catalogue.set_dataset_state(pid, "lost")
    moved = catalogue.upsert_dataset(Dataset("bt9", "/data/b1/scan1"))
    assert moved.pid == pid and moved.beamtime == "bt9"
    assert catalogue.get_file(pid, "a").beamtime == "bt9"
    assert [r.path for r in catalogue.files_lacking_replica("tape", beamtime="bt9")] == ["a"]


def test_set_replicas_in_a_batch_is_all_or_nothing(catalogue):
    one = dataset(catalogue, "bt1", "/data/one").pid
    two = dataset(catalogue, "bt2", "/data/two").pid
    catalogue.upsert_files([f(one, "a"), f(two, "b")])
    good = [ReplicaUpdate(one, "a", "tape", Replica("verified", "t/a", 3.0)),
            ReplicaUpdate(two, "b", "tape", Replica("copying"))]
    with pytest.raises(NotFound, match="nope"):
        catalogue.set_replicas(good + [ReplicaUpdate(two, "nope", "tape", Replica("verified"))])
    assert catalogue.get_file(one, "a").replicas == {}
    catalogue.set_replicas(good)
    catalogue.set_replicas(good)                                        # idempotent
    assert catalogue.get_file(one, "a").replicas == {"tape": Replica("verified", "t/a", 3.0)}
    assert [r.path for r in catalogue.files_by_replica_state("tape", "copying")] == ["b"]
    with pytest.raises(InvalidMessage):
        catalogue.set_replicas([ReplicaUpdate(one, "/abs", "tape", Replica("verified"))])


def _search_world(cat):
    Y2024, Y2025 = 1_704_067_200.0, 1_735_689_600.0          # 2024-01-01, 2025-01-01 UTC
    cat.upsert_proposal(Proposal("P-1", "Protein Crystals", "Ada Lovelace"))
    cat.upsert_proposal(Proposal("P-2", "Battery cathodes", "Bob Builder"))
    cat.upsert_beamtime(Beamtime("BT0001", "B1", "P-1", "Grace Hopper", team=("Carol C",), start=Y2024 + 86400,
                                 end=Y2024 + 3 * 86400))
    cat.upsert_beamtime(Beamtime("BT0002", "B7", "P-2", "Bob Builder", start=Y2025 + 86400, end=Y2025 + 2 * 86400))
    a = dataset(cat, "BT0001", "/d/a", metadata={"title": "Lysozyme soak", "sample": {"name": "Hen egg"}},
                created_at=Y2024 + 2 * 86400).pid
    b = dataset(cat, "BT0002", "/d/b", metadata={"title": "LiFePO4 charge"}, created_at=Y2025 + 86400 * 1.5,
                data_type="processed").pid
    c = dataset(cat, "BT0002", "/d/c", metadata={"title": "Secret cathode"}, created_at=Y2025 + 86400 * 1.7,
                embargo_end=Y2025 + 400 * 86400).pid
    cat.upsert_files([f(a, "scan_0001/detector ü.h5"), f(b, "cycle/charge_017.nxs")])
    return a, b, c, Y2025 + 10 * 86400


def test_search_free_text_identifiers_time_and_embargo(catalogue):
    from domas.catalogue.search import SearchQuery
    a, b, c, now = _search_world(catalogue)

    def pids(**kw):
        return [d.pid for d in catalogue.search_datasets(SearchQuery(now=now, **kw)).datasets]

    assert pids() == [b, a]                                            # the embargoed one is hidden
    assert pids(see_embargoed=True) == [c, b, a]
    assert pids(member_of=("BT0002",)) == [c, b, a]
    assert pids(q="lysoz") == [a] and pids(q="HEN egg") == [a]         # prefix words, any case
    assert pids(q="detector") == [a] and pids(q="detector u") == [a]   # file names, accents removed
    assert pids(q="lovelace") == [a] and pids(q="crystals") == [a]     # proposal PI and title
    assert pids(q="carol") == [a] and pids(q="b7") == [b]              # team, beamline
    assert pids(q="secret", see_embargoed=True) == [c] and pids(q="secret") == []
    assert pids(q="cathodes", see_embargoed=True) == [c, b]                 # the proposal title
    assert pids(q="lysozyme battery") == []                            # every word must match
    assert pids(beamtime="bt0001") == [a] and pids(proposal=" p-2 ") == [b]
    assert pids(pi="ada LOVELACE") == [a] and pids(pi="grace hopper") == [a]
    assert pids(start=1_735_689_600.0) == [b]                          # experiment time from the beamtime
    assert pids(end=1_735_689_600.0) == [a]
    assert catalogue.beamtimes_of_person(" carol c") == ["BT0001"]
    assert catalogue.beamtimes_of_person("Bob Builder") == ["BT0002"] and catalogue.beamtimes_of_person("x") == []


def test_search_pages_with_a_cursor_and_counts_facets_over_every_match(catalogue):
    from domas.catalogue.search import SearchQuery
    a, b, c, now = _search_world(catalogue)
    first = catalogue.search_datasets(SearchQuery(now=now, limit=1, see_embargoed=True))
    assert [d.pid for d in first.datasets] == [c] and first.total == 3 and first.next is not None
    second = catalogue.search_datasets(SearchQuery(now=now, limit=2, see_embargoed=True, after=first.next))
    assert [d.pid for d in second.datasets] == [b, a] and second.next is None
    assert first.facets == {"beamline": {"B7": 2, "B1": 1}, "data_type": {"raw": 2, "processed": 1},
                            "year": {"2025": 2, "2024": 1}, "access": {"open": 2, "embargoed": 1}}
    hidden = catalogue.search_datasets(SearchQuery(now=now))
    assert hidden.total == 2 and hidden.facets["access"] == {"open": 2} and hidden.facets["beamline"]["B7"] == 1
    released = catalogue.search_datasets(SearchQuery(now=now + 401 * 86400))
    assert released.total == 3


def test_search_facet_filters_and_title_order(catalogue):
    """Each facet value the facets show narrows the search to exactly its count; "title" orders by
    the shown title (case ignored) and pages by cursor; bad filters name the parameter."""
    from domas.catalogue.search import SearchQuery
    from domas.errors import UsageError
    a, b, c, now = _search_world(catalogue)
    d = dataset(catalogue, "BT-nodate", "/d/zz/apple", created_at=1_704_067_200.0 + 5 * 86400).pid   # 2024, no beamtime

    def found(**kw):
        return catalogue.search_datasets(SearchQuery(now=now, see_embargoed=True, **kw))

    everything = found()
    for name, counts in everything.facets.items():
        for value, n in counts.items():
            got = found(**{name: value})
            assert got.total == n == len(got.datasets), (name, value)
    assert [x.pid for x in found(beamline="b7").datasets] == [c, b]            # case ignored
    assert [x.pid for x in found(beamline="unknown").datasets] == [d]
    assert [x.pid for x in found(year="2024").datasets] == [d, a]              # beamtime start, else created
    assert [x.pid for x in found(year="2025", data_type="processed").datasets] == [b]
    assert [x.pid for x in found(access="embargoed").datasets] == [c]
    assert [x.pid for x in found(access="open", beamline="B7").datasets] == [b]
    assert found(year="2024", beamline="B7").total == 0
    narrowed = found(beamline="B7")
    assert narrowed.facets["beamline"] == {"B7": 2} and narrowed.facets["access"] == {"embargoed": 1, "open": 1}
    # title order: "LiFePO4 charge", "Lysozyme soak", "Secret cathode", "zz/apple" (the path's last two parts)
    assert [x.pid for x in found(sort="title", limit=10).datasets] == [b, a, c, d]
    seen, after = [], None
    while True:
        page = found(sort="title", limit=1, after=after)
        seen += [x.pid for x in page.datasets]
        if page.next is None:
            break
        after = page.next
    assert seen == [b, a, c, d]
    assert [x.pid for x in found(sort="title", access="open").datasets] == [b, a, d]
    for bad, where in (({"year": "24"}, "year"), ({"access": "secret"}, "access"), ({"sort": "size"}, "sort"),
                       ({"sort": "title", "after": (1.0, a)}, "cursor")):
        with pytest.raises(UsageError, match=where):
            found(**bad)


# -- discovery fills, operators set (catalogue/operator.py) ----------------------------

def test_discovery_never_wipes_what_an_operator_set(catalogue):
    from domas.catalogue import operator as op

    catalogue.upsert_beamtime(Beamtime("BT1", "B1"))                      # discovery: from the path
    ds = dataset(catalogue, beamtime="BT1", path="/B1/202611/Data/BT1/raw")
    op.set_proposal(catalogue, "P7", {"title": "Batteries", "pi": "Ada"}, who="ops", now=10.0)
    op.set_beamtime(catalogue, "BT1", {"proposal": "P7", "pi": "Grace", "team": ("Linus", "Ken")}, who="ops",
                    now=11.0)
    op.embargo(catalogue, ds.pid, 5000.0, who="ops", now=12.0)
    # what discovery and metadata extraction do later: a new file, NeXus metadata, a new dataset
    catalogue.upsert_beamtime(Beamtime("BT1", "B1"))
    catalogue.upsert_beamtime(Beamtime("BT1", "B1", proposal="P-from-nexus", pi="Someone"))
    catalogue.upsert_proposal(Proposal("P7"))
    again = catalogue.upsert_dataset(Dataset("BT1", ds.path, metadata={"title": "scan"}))
    dataset(catalogue, beamtime="BT1", path="/B1/202611/Data/BT1/processed", data_type="processed")
    assert (again.state, again.embargo_end, again.metadata) == ("embargoed", 5000.0, {"title": "scan"})
    assert catalogue.get_beamtime("BT1") == Beamtime("BT1", "B1", "P7", "Grace", ("Linus", "Ken"))
    assert catalogue.get_proposal("P7") == Proposal("P7", "Batteries", "Ada")
    op.release(catalogue, ds.pid, who="ops2", now=20.0)
    assert catalogue.get_dataset(ds.pid).state == "released"


def test_a_beamtime_embargo_covers_datasets_catalogued_later(catalogue):
    """`embargo --beamtime` is kept on the beamtime: a dataset catalogued in it afterwards starts
    under it (search, facets and the access policy see it), unless it comes with its own embargo;
    other beamtimes are untouched; the beamtime's change is recorded once."""
    from domas.dataservice import access
    from domas.catalogue import operator as op
    from domas.catalogue.search import SearchQuery
    catalogue.upsert_beamtime(Beamtime("BT1", "B1", "P-1", "Grace"))
    before = dataset(catalogue, "BT1", "/d/bt1/early").pid
    done = op.embargo_beamtime(catalogue, "BT1", 5000.0, who="ops", now=10.0)
    assert [d.pid for d in done] == [before] and catalogue.beamtime_embargo("BT1") == 5000.0
    later = dataset(catalogue, "BT1", "/d/bt1/later")
    own = dataset(catalogue, "BT1", "/d/bt1/own", embargo_end=9000.0)
    elsewhere = dataset(catalogue, "BT2", "/d/bt2/x")
    assert (later.state, later.embargo_end) == ("embargoed", 5000.0)
    assert (own.state, own.embargo_end) == ("open", 9000.0)          # its own embargo wins
    assert (elsewhere.state, elsewhere.embargo_end) == ("open", None)
    assert access.under_embargo(later.state, later.embargo_end, 100.0)
    assert not access.under_embargo(later.state, later.embargo_end, 5001.0)
    visible = catalogue.search_datasets(SearchQuery(now=100.0))
    assert [d.pid for d in visible.datasets] == [elsewhere.pid] and visible.facets["access"] == {"open": 1}
    catalogue.upsert_datasets([Dataset("BT1", "/d/bt1/bulk")])                    # the bulk path too
    assert catalogue.dataset_by_path("/d/bt1/bulk").embargo_end == 5000.0
    rediscovered = dataset(catalogue, "BT1", "/d/bt1/later", metadata={"title": "again"})
    assert rediscovered.embargo_end == 5000.0 and rediscovered.pid == later.pid
    op.embargo_beamtime(catalogue, "BT1", 5000.0, who="ops", now=11.0)            # the same: nothing new
    bt_changes = [c for c in catalogue.history(["beamtime:BT1"]) if c.field == "embargo_end"]
    assert [(c.who, c.old, c.new) for c in bt_changes] == [("ops", None, 5000.0)]
    assert reopen(catalogue).beamtime_embargo("BT1") == 5000.0                  # kept across a restart
    with pytest.raises(NotFound, match="beamtime BT404 is not in the catalogue"):
        op.embargo_beamtime(catalogue, "BT404", 5000.0, who="ops", now=12.0)


def test_every_operator_change_is_recorded_with_who_and_when(catalogue):
    from domas.catalogue import operator as op

    ds = dataset(catalogue, beamtime="BT1", path="/B1/202611/Data/BT1/raw")
    op.set_beamtime(catalogue, "BT1", {"proposal": "P7", "pi": "Grace"}, who="alice", now=100.0)
    op.set_beamtime(catalogue, "BT1", {"pi": "Grace"}, who="alice", now=101.0)          # no change: no record
    op.set_proposal(catalogue, "P7", {"pi": "Ada"}, who="bob", now=102.0)
    op.embargo(catalogue, ds.pid, 9000.0, who="carol", now=103.0)
    got = [(c.at, c.who, c.target, c.field, c.old, c.new) for c in op.history(catalogue, ds.pid)]
    assert got == [(100.0, "alice", "beamtime:BT1", "proposal", None, "P7"),
                   (100.0, "alice", "beamtime:BT1", "pi", None, "Grace"),
                   (102.0, "bob", "proposal:P7", "pi", "", "Ada"),
                   (103.0, "carol", f"dataset:{ds.pid}", "state", "open", "embargoed"),
                   (103.0, "carol", f"dataset:{ds.pid}", "embargo_end", None, 9000.0)]
    assert [c.field for c in reopen(catalogue).history(["proposal:P7"])] == ["pi"]
    with pytest.raises(NotFound):
        op.history(catalogue, "nothing-like-this")


def test_bulk_dataset_upsert_matches_one_by_one(catalogue):
    from domas.catalogue.search import SearchQuery

    catalogue.upsert_datasets([Dataset("bt1", f"/bulk/{i}", metadata={"title": f"Bulk sample {i}"},
                                       created_at=float(i)) for i in range(50)])
    catalogue.upsert_datasets([Dataset("bt1", "/bulk/7", metadata={"note": "Annotated"}, created_at=7.0)])
    assert catalogue.dataset_by_path("/bulk/7").metadata == {"title": "Bulk sample 7", "note": "Annotated"}
    found = catalogue.search_datasets(SearchQuery(q="bulk sample", limit=100))
    assert found.total == 50 and len(found.datasets) == 50
    assert catalogue.search_datasets(SearchQuery(q="annotated")).total == 1


def test_year_facet_of_a_beamtime_without_dates_comes_from_each_dataset(catalogue):
    from domas.catalogue.search import SearchQuery

    catalogue.upsert_beamtime(Beamtime("BT9", "B3"))                       # no start or end
    for i, t in enumerate((1_704_067_300.0, 1_735_689_700.0, 1_735_689_800.0)):   # 2024, 2025, 2025
        dataset(catalogue, "BT9", f"/d/untimed/{i}", created_at=t, embargo_end=2e9 if i == 2 else None)
    found = catalogue.search_datasets(SearchQuery(now=1.8e9, see_embargoed=True))
    assert found.facets["year"] == {"2025": 2, "2024": 1} and found.facets["beamline"] == {"B3": 3}
    assert found.facets["access"] == {"open": 2, "embargoed": 1}


def test_search_counts_follow_every_write(catalogue):
    from domas.catalogue.search import SearchQuery

    first = dataset(catalogue, "bt1", "/counts/a", created_at=1.0).pid
    q = SearchQuery(now=10.0, limit=1)
    assert catalogue.search_datasets(q).total == 1
    dataset(catalogue, "bt1", "/counts/b", created_at=2.0)
    assert catalogue.search_datasets(q).total == 2                     # a write: counted at once
    other = reopen(catalogue)                                           # a write by another connection
    other.upsert_dataset(Dataset("bt2", "/counts/c", created_at=3.0))
    other.close()
    assert catalogue.search_datasets(q).total == 3
    catalogue.set_dataset_state(first, "embargoed", embargo_end=5000.0)
    found = catalogue.search_datasets(q)
    assert found.total == 2 and found.facets["access"] == {"open": 2}
    later = catalogue.search_datasets(SearchQuery(now=6000.0, limit=1))   # the embargo ended
    assert later.total == 3


def test_scans_are_records_of_their_own_filled_only_where_empty(catalogue):
    """Bluesky runs: one record per uid; an upsert fills only empty fields (a replayed or late
    document never overwrites), streams add up, the dataset's metadata is never touched."""
    from domas.catalogue.base import Scan

    ds = dataset(catalogue, metadata={"sample": "set by operator"})
    start = Scan("r1", ds.pid, scan_id=7, plan_name="scan", sample={"name": "Ni foil"}, detectors=("det",),
                 motors=("motor",), start_time=100.0, streams={"primary": ["det", "motor"]})
    catalogue.upsert_scans([start, Scan("r0", ds.pid, plan_name="count", start_time=50.0)])
    stop = Scan("r1", ds.pid, stop_time=105.0, exit_status="success", num_events={"primary": 5},
                streams={"baseline": ["ring_current"]})
    catalogue.upsert_scans([stop])
    other = dataset(catalogue, path="/data/b1/scan2").pid
    catalogue.upsert_scans([stop, Scan("r1", other, plan_name="x", exit_status="abort", stop_time=9.0),
                            Scan("r1", ds.pid, files=0)])
    want = Scan("r1", ds.pid, scan_id=7, plan_name="scan", sample={"name": "Ni foil"}, detectors=("det",),
                motors=("motor",), start_time=100.0, stop_time=105.0, exit_status="success",
                num_events={"primary": 5}, streams={"primary": ["det", "motor"], "baseline": ["ring_current"]},
                files=0)
    assert catalogue.get_scan("r1") == want
    assert [s.uid for s in catalogue.scans_of(ds.pid)] == ["r0", "r1"]          # oldest start first
    assert catalogue.scans_of(ds.pid, limit=1)[0].uid == "r0"
    assert reopen(catalogue).get_scan("r1") == want
    assert catalogue.get_dataset(ds.pid).metadata == {"sample": "set by operator"}
    assert catalogue.get_scan("nope") is None and catalogue.scans_of("CSTR:none") == []
    with pytest.raises(NotFound):
        catalogue.upsert_scans([Scan("r2", ds.pid), Scan("r3", "CSTR:none")])
    assert catalogue.get_scan("r2") is None, "a refused batch writes nothing"
    with pytest.raises(InvalidMessage):
        catalogue.upsert_scans([Scan("r4", ds.pid, scan_id="7")])


def test_free_text_search_finds_a_dataset_by_its_scans(catalogue):
    from domas.catalogue.base import Scan
    from domas.catalogue.search import SearchQuery

    ds = dataset(catalogue, path="/data/b1/runs", created_at=1.0)
    dataset(catalogue, path="/data/b1/other", created_at=2.0)
    catalogue.upsert_scans([Scan("r1", ds.pid, plan_name="rel_scan", sample={"name": "Lysozyme crystal"},
                                 detectors=("pilatus",))])
    catalogue.upsert_scans([Scan("r1", ds.pid, exit_status="success")])      # a stop: still found

    def found(q):
        return [d.pid for d in catalogue.search_datasets(SearchQuery(q=q, now=10.0, see_embargoed=True)).datasets]
    assert found("lysozyme") == [ds.pid] and found("pilatus") == [ds.pid] and found("lyso crystal") == [ds.pid]
    assert found("rel_scan") == [ds.pid] and found("ferritin") == []
