"""The production catalogue: MongoDB through pymongo.

Collections: proposals, beamtimes, datasets (_id = PID, unique path), files (unique (dataset,
path), beamtime index, replicas embedded as {tier: {state, url, verified_at, version, checked_at}}
with one index on `replicas.<tier>.state` per tier, created the first time a tier is seen). Indexes are made lazily on
the first operation, so constructing a MongoCatalogue never blocks on an unreachable server.
"Has a verified replica on tier X" is an index lookup; "lacks one" ($ne) scans the files in scope,
so the lifecycle asks it per dataset or beamtime.
Counters move by the delta between the file as it was (returned atomically by findAndModify) and as
it is now, so concurrent and repeated upserts keep them right. Without multi-document
transactions a crash between a file write and its counter update leaves the counters short;
`recount_dataset` repairs that. pymongo exceptions are translated once, in `_edge` (table `_ERRORS`).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from typing import Callable, Iterator, Sequence

import bson.errors
import pymongo
from pymongo import ReplaceOne, ReturnDocument, UpdateOne, errors, uri_parser

from domas.errors import CatalogueUnavailable, ConfigError, DomasError, InvalidMessage, NotFound

from .base import (Beamtime, Catalogue, Change, Dataset, FileRecord, Proposal, Replica, ReplicaUpdate, Scan,
                   batched, beamtime_from, check_dataset, check_dataset_state, check_file, check_id,
                   check_replica_updates, check_scan, check_tier, counter_delta, dataset_from, file_from, filled,
                   inherit_embargo, kept_dataset, merged_file, merged_scan, plain_metadata, proposal_from, scan_doc,
                   scan_from, scan_text)
from .pid import dataset_pid, prefix_style
from .search import (SearchQuery, SearchResult, beamtime_text, check_query, dataset_text, file_words, fold_facets,
                     norm_id, query_words, sort_key, sort_title, words, year_range)

_ERRORS: list[tuple[type[Exception], type[DomasError], str]] = [
    (errors.DuplicateKeyError, InvalidMessage, "the catalogue refused a duplicate record"),
    (errors.ConnectionFailure, CatalogueUnavailable, "the catalogue cannot be reached"),
    (errors.ExecutionTimeout, CatalogueUnavailable, "the catalogue did not answer in time"),
    (errors.WTimeoutError, CatalogueUnavailable, "the catalogue did not confirm the write in time"),
    (bson.errors.InvalidDocument, InvalidMessage, "the record cannot be stored in the catalogue"),
    (errors.PyMongoError, DomasError, "the catalogue failed"),
]


def _short(err: Exception) -> str:
    """pymongo's message without the topology dump and timeout list it appends."""
    text = str(err)
    for tail in (" (configured timeouts", ", Timeout:", ", full error:", ", Topology Description"):
        text = text.split(tail)[0]
    return re.sub(r"\[Errno -?\d+\] ", "", text)[:300]          # "host:port: Connection refused"


def _translate(err: Exception, where: str) -> DomasError:
    detail = _short(err)
    if where not in detail:
        detail = f"{where}: {detail}"
    for foreign, ours, text in _ERRORS:
        if isinstance(err, foreign):
            hint = "; check that MongoDB runs and catalogue.url is right" if ours is CatalogueUnavailable else ""
            return ours(f"{text} ({detail}){hint}")
    return DomasError(f"the catalogue failed ({detail})")


def _replica_doc(r: Replica) -> dict:
    return {"state": r.state, "url": r.url, "verified_at": r.verified_at, "version": r.version,
            "checked_at": r.checked_at}


def _scan(doc: dict) -> Scan:
    return scan_from({**doc, "uid": doc["_id"]})


class MongoCatalogue(Catalogue):
    """Catalogue in a MongoDB database (default name `domas`, or the one in the URL)."""

    def __init__(self, url: str, pid_prefix: str = "CSTR:17058.11.HEPS", *, database: str | None = None,
                 timeout: float = 2.0, clock: Callable[[], float] = time.time) -> None:
        prefix_style(pid_prefix)
        self.pid_prefix = pid_prefix
        self._clock = clock
        self._url = url
        try:
            parsed = uri_parser.parse_uri(url, warn=True) if not url.startswith("mongodb+srv") else {}
        except (errors.InvalidURI, errors.ConfigurationError, ValueError) as e:
            raise ConfigError(f"catalogue.url: {url!r} is not a MongoDB URL: {e}") from None
        self._where = ",".join(f"{h}:{p}" for h, p in parsed.get("nodelist", [])) or url.split("@")[-1]
        ms = int(timeout * 1000)
        self._client = pymongo.MongoClient(url, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms,
                                           socketTimeoutMS=max(10 * ms, 20000), appname="domas")
        self._db = self._client[database or parsed.get("database") or "domas"]
        self._schema_lock = threading.Lock()
        self._ready = False
        self._tiers: set[str] = set()

    @contextlib.contextmanager
    def _edge(self):
        try:
            yield
        except errors.PyMongoError as e:
            raise _translate(e, self._where) from e
        except bson.errors.BSONError as e:
            raise _translate(e, self._where) from e

    def _col(self, name: str):
        if not self._ready:
            self._ensure_schema()
        return self._db[name]

    def _ensure_schema(self) -> None:
        with self._schema_lock, self._edge():
            if self._ready:
                return
            db = self._db
            db.proposals.create_index("pi")
            db.beamtimes.create_index("pi")
            db.beamtimes.create_index("proposal")
            db.datasets.create_index("path", unique=True)
            db.datasets.create_index([("beamtime", 1), ("created_at", -1)])
            db.datasets.create_index("created_at")
            db.files.create_index([("dataset", 1), ("path", 1)], unique=True)
            db.files.create_index("beamtime")
            db.datasets.create_index("words")
            db.datasets.create_index("file_words")
            db.beamtimes.create_index("words")
            db.datasets.create_index([("sort_title", 1), ("_id", 1)])
            db.scans.create_index([("dataset", 1), ("start_time", 1), ("_id", 1)])
            db.scans.create_index("words")
            for doc in db.datasets.find({"sort_title": {"$exists": False}}, {"path": 1, "metadata": 1}):
                db.datasets.update_one({"_id": doc["_id"]}, {"$set": {"sort_title": sort_title(
                    doc["path"], doc.get("metadata") or {})}})       # catalogues from before the title order
            self._ready = True

    def _ensure_tier(self, tier: str) -> None:
        check_tier(tier)
        if tier not in self._tiers:
            with self._edge():
                self._col("files").create_index(f"replicas.{tier}.state")
            self._tiers.add(tier)

    # -- writes --------------------------------------------------------------------------------
    def upsert_proposal(self, proposal: Proposal, *, overwrite: bool = False) -> None:
        check_id("proposal", proposal.id)
        if not overwrite:
            proposal = filled(self.get_proposal(proposal.id), proposal)
        with self._edge():
            self._col("proposals").update_one({"_id": proposal.id}, {"$set": {
                "title": proposal.title, "pi": proposal.pi}}, upsert=True)
            for bt in self._db.beamtimes.distinct("_id", {"proposal": proposal.id}):
                self._index_beamtime(bt)

    def upsert_beamtime(self, b: Beamtime, *, overwrite: bool = False) -> None:
        check_id("beamtime", b.id)
        if not overwrite:
            b = filled(self.get_beamtime(b.id), b)
        fields = {"beamline": b.beamline, "proposal": b.proposal, "pi": b.pi, "team": list(b.team),
                  "start": b.start, "end": b.end}
        with self._edge():
            self._col("beamtimes").update_one({"_id": b.id}, {"$set": fields}, upsert=True)
            self._index_beamtime(b.id)

    def _index_beamtime(self, beamtime_id: str) -> None:
        bt = self.get_beamtime(beamtime_id)
        text = beamtime_text(bt, self.get_proposal(bt.proposal) if bt.proposal else None)
        self._db.beamtimes.update_one({"_id": beamtime_id}, {"$set": {"words": sorted(set(words(text)))}})

    def upsert_dataset(self, d: Dataset) -> Dataset:
        check_dataset(d)
        stored = self.dataset_by_path(d.path)
        if stored is not None:
            d = kept_dataset(stored, d)
        fields = {"beamtime": d.beamtime, "data_type": d.data_type, "state": d.state,
                  "embargo_end": d.embargo_end, "metadata": plain_metadata(d.metadata)}
        fields["words"] = sorted(set(words(dataset_text(d.beamtime, d.path, d.data_type, fields["metadata"]))))
        fields["sort_title"] = sort_title(d.path, fields["metadata"])
        datasets = self._col("datasets")
        with self._edge():
            old = datasets.find_one({"path": d.path}, {"beamtime": 1})
            if old is not None:
                pid = old["_id"]
                if d.pid and d.pid != pid:
                    raise InvalidMessage(f"dataset {d.path} already has the PID {pid}, not {d.pid}")
                datasets.update_one({"_id": pid}, {"$set": fields})
                if old.get("beamtime") != d.beamtime:
                    self._db.files.update_many({"dataset": pid}, {"$set": {"beamtime": d.beamtime}})
            else:
                pid = d.pid or dataset_pid(self.pid_prefix, d.beamtime, d.path)
                created = d.created_at if d.created_at is not None else self._clock()
                kept = inherit_embargo(d, self.beamtime_embargo(d.beamtime))
                fields.update(state=kept.state, embargo_end=kept.embargo_end)
                datasets.update_one({"_id": pid, "path": d.path}, {"$set": fields, "$setOnInsert": {
                    "file_count": 0, "bytes": 0, "created_at": created}}, upsert=True)
        return self.get_dataset(pid)

    def upsert_files(self, batch: Sequence[FileRecord]) -> None:
        for f in batch:
            check_file(f)
            for tier in f.replicas:
                self._ensure_tier(tier)
        with self._edge():
            beamtimes = self._beamtimes_of(sorted({f.dataset for f in batch}))
            for f in batch:
                self._write_file(f, beamtimes[f.dataset])

    def _beamtimes_of(self, pids: list[str]) -> dict[str, str]:
        """Beamtime of each dataset; NotFound (before anything is written) if one is not catalogued."""
        found = {doc["_id"]: doc["beamtime"]
                 for doc in self._col("datasets").find({"_id": {"$in": pids}}, {"beamtime": 1})}
        missing = [p for p in pids if p not in found]
        if missing:
            raise NotFound(f"dataset {missing[0]} is not in the catalogue; upsert the dataset before its files")
        return found

    def _write_file(self, f: FileRecord, beamtime: str) -> None:
        """One findAndModify (returning the file as it was), then the corrections `merged_file` asks
        for, guarded by the new content so a concurrent newer write is never undone."""
        fields = {"beamtime": beamtime, "size": f.size, "mtime": f.mtime}
        fields.update({k: v for k, v in (("adler32", f.adler32), ("xxh3", f.xxh3)) if v})
        fields.update({f"replicas.{t}": _replica_doc(r) for t, r in f.replicas.items()})
        on_insert = {k: "" for k, v in (("adler32", f.adler32), ("xxh3", f.xxh3)) if not v}
        key = {"dataset": f.dataset, "path": f.path}
        before = self._db.files.find_one_and_update(key, {"$set": fields, "$setOnInsert": on_insert} if on_insert
                                                    else {"$set": fields}, upsert=True,
                                                    return_document=ReturnDocument.BEFORE)
        old = file_from(before) if before is not None else None
        if old is not None:
            after = merged_file(old, f)
            fix = {k: "" for k in ("adler32", "xxh3") if getattr(after, k) == "" and getattr(old, k)}
            fix.update({f"replicas.{t}.state": "stale" for t, r in after.replicas.items()
                        if t not in f.replicas and r != old.replicas[t]})
            if fix:
                guard = {k: v for k, v in fields.items() if not k.startswith("replicas.")}
                self._db.files.update_one({**key, **guard}, {"$set": fix})
        n, b = counter_delta(old.size if old else None, f.size)
        change: dict = {"$inc": {"file_count": n, "bytes": b}} if n or b else {}
        if old is None:
            change["$addToSet"] = {"file_words": {"$each": file_words(f.path)}}
        if change:
            self._db.datasets.update_one({"_id": f.dataset}, change)

    def set_replicas(self, batch: Sequence[ReplicaUpdate]) -> None:
        check_replica_updates(batch)
        for tier in {u.tier for u in batch}:
            self._ensure_tier(tier)
        keys = {(u.dataset, u.path) for u in batch}
        with self._edge():
            files = self._col("files")
            for part in batched(sorted(keys), 1000):
                query = {"$or": [{"dataset": d, "path": p} for d, p in part]}
                found = {(doc["dataset"], doc["path"]) for doc in files.find(query, {"dataset": 1, "path": 1})}
                missing = sorted(set(part) - found)
                if missing:
                    raise NotFound(f"file {missing[0][1]} of dataset {missing[0][0]} is not in the catalogue")
            if batch:
                files.bulk_write([UpdateOne({"dataset": u.dataset, "path": u.path},
                                            {"$set": {f"replicas.{u.tier}": _replica_doc(u.replica)}})
                                  for u in batch], ordered=True)

    def set_dataset_state(self, pid: str, state: str, embargo_end: float | None = None) -> None:
        check_dataset_state(state)
        change = {"state": state} if embargo_end is None else {"state": state, "embargo_end": embargo_end}
        with self._edge():
            res = self._col("datasets").update_one({"_id": pid}, {"$set": change})
        if res.matched_count == 0:
            raise NotFound(f"dataset {pid} is not in the catalogue")

    def recount_dataset(self, pid: str) -> Dataset:
        with self._edge():
            rows = list(self._col("files").aggregate([
                {"$match": {"dataset": pid}},
                {"$group": {"_id": None, "n": {"$sum": 1}, "b": {"$sum": "$size"}}}]))
            n, b = (rows[0]["n"], rows[0]["b"]) if rows else (0, 0)
            res = self._db.datasets.update_one({"_id": pid}, {"$set": {"file_count": n, "bytes": b}})
        if res.matched_count == 0:
            raise NotFound(f"dataset {pid} is not in the catalogue")
        return self.get_dataset(pid)

    # -- reads ---------------------------------------------------------------------------------
    def _one(self, collection: str, query: dict) -> dict | None:
        with self._edge():
            doc = self._col(collection).find_one(query, {"words": 0, "file_words": 0})
        if doc is not None:
            doc["id" if collection in ("proposals", "beamtimes") else "pid"] = doc.pop("_id")
        return doc

    def get_proposal(self, proposal_id: str) -> Proposal | None:
        doc = self._one("proposals", {"_id": proposal_id})
        return proposal_from(doc) if doc else None

    def get_beamtime(self, beamtime_id: str) -> Beamtime | None:
        doc = self._one("beamtimes", {"_id": beamtime_id})
        return beamtime_from(doc) if doc else None

    def record_changes(self, changes: Sequence[Change]) -> None:
        if changes:
            with self._edge():
                self._col("changes").insert_many([{"at": c.at, "who": c.who, "target": c.target, "field": c.field,
                                                   "old": c.old, "new": c.new} for c in changes], ordered=True)

    def history(self, targets: Sequence[str]) -> list[Change]:
        with self._edge():
            docs = list(self._col("changes").find({"target": {"$in": list(targets)}}).sort([("at", 1), ("_id", 1)]))
        return [Change(d["at"], d["who"], d["target"], d["field"], d.get("old"), d.get("new")) for d in docs]

    # -- scans: one document per run, _id = uid (base.Scan); a run's document writes only it -----
    def upsert_scans(self, batch: Sequence[Scan]) -> None:
        for s in batch:
            check_scan(s)
        if not batch:
            return
        scans = self._col("scans")
        with self._edge():
            pids = sorted({s.dataset for s in batch})
            known = set(self._db.datasets.distinct("_id", {"_id": {"$in": pids}}))
            for pid in pids:
                if pid not in known:
                    raise NotFound(f"dataset {pid} is not in the catalogue; upsert the dataset before its scans")
            uids = sorted({s.uid for s in batch})
            stored = {doc["_id"]: _scan(doc) for doc in scans.find({"_id": {"$in": uids}})}
            writes: dict[str, Scan] = {}
            for s in batch:
                new = merged_scan(stored.get(s.uid), s)
                if new != stored.get(s.uid):
                    stored[s.uid] = writes[s.uid] = new
            if writes:
                scans.bulk_write([ReplaceOne({"_id": uid}, {**scan_doc(s), "_id": uid, "words": sorted(set(words(
                    scan_text(s))))}, upsert=True) for uid, s in writes.items()], ordered=True)

    def get_scan(self, uid: str) -> Scan | None:
        with self._edge():
            doc = self._col("scans").find_one({"_id": uid}, {"words": 0})
        return _scan(doc) if doc else None

    def scans_of(self, pid: str, limit: int | None = None) -> list[Scan]:
        with self._edge():
            cursor = self._col("scans").find({"dataset": pid}).sort([("start_time", 1), ("_id", 1)])
            return [_scan(doc) for doc in (cursor.limit(int(limit)) if limit else cursor)]

    def get_dataset(self, pid: str) -> Dataset | None:
        doc = self._one("datasets", {"_id": pid})
        return dataset_from(doc) if doc else None

    def dataset_by_path(self, path: str) -> Dataset | None:
        doc = self._one("datasets", {"path": path})
        return dataset_from(doc) if doc else None

    def _beamtime_ids(self, proposal: str | None, pi: str | None) -> list[dict]:
        """Clauses restricting datasets to the beamtimes of a proposal and/or a PI."""
        clauses = []
        if proposal is not None:
            ids = self._db.beamtimes.distinct("_id", {"proposal": proposal})
            clauses.append({"beamtime": {"$in": ids}})
        if pi is not None:
            proposals = self._db.proposals.distinct("_id", {"pi": pi})
            ids = self._db.beamtimes.distinct("_id", {"$or": [{"pi": pi}, {"proposal": {"$in": proposals}}]})
            clauses.append({"beamtime": {"$in": ids}})
        return clauses

    def find_datasets(self, *, beamtime=None, proposal=None, pi=None, since=None, path_prefix=None,
                      limit=None) -> list[Dataset]:
        with self._edge():
            clauses = self._beamtime_ids(proposal, pi)
            if beamtime is not None:
                clauses.append({"beamtime": beamtime})
            if since is not None:
                clauses.append({"created_at": {"$gte": since}})
            if path_prefix is not None:
                root = path_prefix.rstrip("/")
                clauses.append({"$or": [{"path": root or "/"}, {"path": {"$regex": "^" + re.escape(root + "/")}}]})
            query = {"$and": clauses} if clauses else {}
            cursor = self._col("datasets").find(query, {"words": 0, "file_words": 0}).sort([("created_at", -1), ("_id", 1)])
            if limit is not None:
                cursor = cursor.limit(int(limit))
            docs = list(cursor)
        for doc in docs:
            doc["pid"] = doc.pop("_id")
        return [dataset_from(doc) for doc in docs]

    # -- search (search.py states the contract) ------------------------------------------------
    @staticmethod
    def _exactly(value: str) -> dict:
        return {"$regex": "^" + re.escape(value.strip()) + "$", "$options": "i"}

    def _search_clauses(self, query: SearchQuery) -> list[dict]:
        clauses: list[dict] = []
        bts = self._db.beamtimes
        for w in query_words(query.q):
            prefix = {"$regex": "^" + re.escape(w)}
            clauses.append({"$or": [{"words": prefix}, {"file_words": prefix},
                                    {"_id": {"$in": self._db.scans.distinct("dataset", {"words": prefix})}},
                                    {"beamtime": {"$in": bts.distinct("_id", {"words": prefix})}}]})
        if norm_id(query.beamtime):
            clauses.append({"beamtime": self._exactly(query.beamtime)})
        if norm_id(query.proposal):
            clauses.append({"beamtime": {"$in": bts.distinct("_id", {"proposal": self._exactly(query.proposal)})}})
        if norm_id(query.pi):
            props = self._db.proposals.distinct("_id", {"pi": self._exactly(query.pi)})
            clauses.append({"beamtime": {"$in": bts.distinct("_id", {"$or": [{"pi": self._exactly(query.pi)},
                                                                              {"proposal": {"$in": props}}]})}})
        if query.start is not None or query.end is not None:
            clauses.append(self._time_clause(query.start, query.end))
        if query.beamline is not None:
            if query.beamline.casefold() == "unknown":
                clauses.append({"beamtime": {"$nin": bts.distinct("_id", {"beamline": {"$nin": ["", None]}})}})
            else:
                clauses.append({"beamtime": {"$in": bts.distinct("_id", {"beamline": self._exactly(query.beamline)})}})
        if query.data_type is not None:
            clauses.append({"data_type": query.data_type})
        if query.year is not None:
            y0, y1 = year_range(query.year)
            timed = bts.distinct("_id", {"start": {"$ne": None}})
            clauses.append({"$or": [{"beamtime": {"$in": bts.distinct("_id", {"start": {"$gte": y0, "$lt": y1}})}},
                                    {"beamtime": {"$nin": timed}, "created_at": {"$gte": y0, "$lt": y1}}]})
        if query.access is not None:
            clauses.append({"$or" if query.access == "embargoed" else "$nor": self._under_embargo(query.now)})
        if not query.see_embargoed:
            clauses.append({"$or": [{"$nor": self._under_embargo(query.now)},
                                    {"beamtime": {"$in": list(query.member_of)}}]})
        return clauses

    @staticmethod
    def _under_embargo(now: float) -> list[dict]:
        return [{"embargo_end": {"$gt": now}}, {"embargo_end": None, "state": "embargoed"}]

    def _time_clause(self, start: float | None, end: float | None) -> dict:
        """Experiment time overlapping [start, end]: the beamtime's times, else created_at."""
        timed = {b["_id"]: b for b in self._db.beamtimes.find({"start": {"$ne": None}}, {"start": 1, "end": 1})}
        overlap = [i for i, b in timed.items()
                   if (start is None or (b.get("end") if b.get("end") is not None else b["start"]) >= start)
                   and (end is None or b["start"] <= end)]
        created: dict = {}
        if start is not None:
            created["$gte"] = start
        if end is not None:
            created["$lte"] = end
        return {"$or": [{"beamtime": {"$in": overlap}}, {"beamtime": {"$nin": list(timed)}, "created_at": created}]}

    def search_datasets(self, query: SearchQuery) -> SearchResult:
        query = check_query(query)
        limit = max(1, int(query.limit))
        key, order = ("sort_title", 1) if query.sort == "title" else ("created_at", -1)
        with self._edge():
            datasets = self._col("datasets")
            clauses = self._search_clauses(query)
            match = {"$and": clauses} if clauses else {}
            page = list(clauses)
            if query.after is not None:
                c, p = query.after
                page.append({"$or": [{key: {"$lt" if order < 0 else "$gt": c}}, {key: c, "_id": {"$gt": p}}]})
            docs = list(datasets.find({"$and": page} if page else {}, {"words": 0, "file_words": 0, "sort_title": 0})
                        .sort([(key, order), ("_id", 1)]).limit(limit + 1))
            groups = list(datasets.aggregate([{"$match": match}, {"$group": {"_id": {
                "bt": "$beamtime", "dt": "$data_type",
                "y": {"$year": {"$toDate": {"$multiply": ["$created_at", 1000]}}},
                "e": {"$or": [{"$gt": [{"$ifNull": ["$embargo_end", None]}, query.now]},
                              {"$and": [{"$eq": [{"$ifNull": ["$embargo_end", None]}, None]},
                                        {"$eq": ["$state", "embargoed"]}]}]}}, "n": {"$sum": 1}}}]))
            beamtimes = {doc["_id"]: beamtime_from({**doc, "id": doc["_id"]}) for doc in self._db.beamtimes.find(
                {"_id": {"$in": sorted({g["_id"]["bt"] for g in groups})}}, {"words": 0})}
        for doc in docs:
            doc["pid"] = doc.pop("_id")
        found = [dataset_from(doc) for doc in docs[:limit]]
        folded = fold_facets(((g["_id"]["bt"], g["_id"]["dt"], str(g["_id"]["y"]), bool(g["_id"]["e"]), g["n"])
                              for g in groups), beamtimes)
        nxt = sort_key(found[-1], query.sort) if len(docs) > limit else None
        return SearchResult(found, sum(g["n"] for g in groups), folded, nxt)

    def set_beamtime_embargo(self, beamtime_id: str, until: float | None) -> None:
        with self._edge():
            if until is None:
                self._col("beamtime_embargoes").delete_one({"_id": beamtime_id})
            else:
                self._col("beamtime_embargoes").update_one({"_id": beamtime_id}, {"$set": {"embargo_end": until}},
                                                           upsert=True)

    def beamtime_embargo(self, beamtime_id: str) -> float | None:
        with self._edge():
            doc = self._col("beamtime_embargoes").find_one({"_id": beamtime_id})
        return doc["embargo_end"] if doc else None

    def beamtimes_of_person(self, name: str) -> list[str]:
        if not name.strip():
            return []
        who = self._exactly(name)
        with self._edge():
            props = self._col("proposals").distinct("_id", {"pi": who})
            return sorted(self._db.beamtimes.distinct("_id", {"$or": [{"pi": who}, {"team": who},
                                                                      {"proposal": {"$in": props}}]}))

    def get_file(self, dataset: str, path: str) -> FileRecord | None:
        with self._edge():
            doc = self._col("files").find_one({"dataset": dataset, "path": path})
        return file_from(doc) if doc else None

    def _stream(self, query: dict, sort: list, limit: int | None) -> Iterator[FileRecord]:
        with self._edge():
            cursor = self._col("files").find(query).sort(sort).batch_size(2000)
            if limit is not None:
                cursor = cursor.limit(int(limit))
            for doc in cursor:
                yield file_from(doc)

    def files_of(self, pid: str) -> Iterator[FileRecord]:
        return self._stream({"dataset": pid}, [("path", 1)], None)

    @staticmethod
    def _scope(dataset: str | None, beamtime: str | None) -> dict:
        query = {}
        if dataset is not None:
            query["dataset"] = dataset
        if beamtime is not None:
            query["beamtime"] = beamtime
        return query

    def files_by_replica_state(self, tier, state, *, dataset=None, beamtime=None, limit=None):
        self._ensure_tier(tier)
        query = {f"replicas.{tier}.state": state, **self._scope(dataset, beamtime)}
        return self._stream(query, [("_id", 1)], limit)

    def files_lacking_replica(self, tier, state="verified", *, dataset=None, beamtime=None, limit=None):
        self._ensure_tier(tier)
        query = {f"replicas.{tier}.state": {"$ne": state}, **self._scope(dataset, beamtime)}
        return self._stream(query, [("_id", 1)], limit)

    def replicas_due_for_check(self, tier, checked_before, limit=1000):
        """Two bounded queries (copies never checked, by verified_at; checked ones, by checked_at),
        merged on the last check: the server sorts and limits, nothing is read whole."""
        self._ensure_tier(tier)
        state = {f"replicas.{tier}.state": "verified"}
        never = {**state, f"replicas.{tier}.checked_at": None,
                 f"replicas.{tier}.verified_at": {"$lt": checked_before}}
        checked = {**state, f"replicas.{tier}.checked_at": {"$lt": checked_before}}
        found = list(self._stream(never, [(f"replicas.{tier}.verified_at", 1), ("_id", 1)], limit))
        found += self._stream(checked, [(f"replicas.{tier}.checked_at", 1), ("_id", 1)], limit)

        def last(f: FileRecord) -> float:
            r = f.replicas[tier]
            return r.checked_at or r.verified_at or 0.0

        return sorted(found, key=last)[:limit]

    def ping(self) -> None:
        with self._edge():
            self._client.admin.command("ping")

    def drop(self) -> None:
        """Remove the whole database (tests and `domas` resets only)."""
        with self._edge():
            self._client.drop_database(self._db.name)

    def close(self) -> None:
        self._client.close()
