"""`domas controller`, `domas submit`, `domas status`, `domas cancel`: run and use the controller."""

from __future__ import annotations

import argparse
import json
import time

from domas.config import Config, parse_size_flag
from domas.logsafe import setup_logging
from domas.transfer.validate import MAX_PRIORITY

CONTROLLER_HELP = """\
Run the controller: it queues transfers, hands chunks to agents as leases over gRPC, folds the
chunk checksums into each file's adler32, verifies the destination and renames it into place.
State lives in SQLite under --state-dir, so a restart continues where it stopped.

Every source and destination must lie inside a storage root: the configuration's [storage]
tiers and [storage.endpoints], plus each --root; with none the controller does not start.

example:
  DOMAS_TOKEN=secret domas controller --listen 0.0.0.0:7400 --state-dir /var/lib/domas --root /data
"""

SUBMIT_HELP = """\
Queue a transfer on the controller; agents copy it. Prints the transfer id.

examples:
  domas submit /data/b1/scan001 root://eos.example//heps/b1/ --beamline b1
  domas submit /data/a /data/b /archive/ --priority 5 --wait
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("controller", help="run the controller", description=CONTROLLER_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", help="host:port for gRPC (default 127.0.0.1:7400; port 0 = any)")
    p.add_argument("--state-dir", help="where the controller's state lives (default: the config's state_dir)")
    p.add_argument("--metrics-listen", help="host:port for /metrics (default 127.0.0.1:9400; port 0 = any)")
    p.add_argument("--root", action="append", default=[], metavar="PATH_OR_URL",
                   help="a storage root transfers may read and write (repeatable; adds to the configuration's)")
    p.set_defaults(handler=run_controller)

    s = sub.add_parser("submit", help="queue a transfer on the controller", description=SUBMIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("paths", nargs="+", metavar="SRC... DST", help="sources, then the destination")
    s.add_argument("--controller", help="controller address host:port")
    s.add_argument("--beamline", default="", help="owning beamline (fair share is per beamline)")
    s.add_argument("--priority", type=priority, default=0,
                   help=f"higher runs first within the beamline (-{MAX_PRIORITY} to {MAX_PRIORITY}, default 0)")
    s.add_argument("--chunk-size", help="chunk size, e.g. 8MiB")
    s.add_argument("--verify", choices=["default", "none"], default="default")
    s.add_argument("--force", action="store_true", help="copy even files whose destination is up to date")
    s.add_argument("--wait", action="store_true", help="wait until the transfer finishes")
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.add_argument("--retry-for", type=_seconds, default=SUBMIT_PATIENCE, metavar="SECONDS",
                   help="while the controller cannot be reached or is restarting, ask again this long, with the "
                        f"same request id so that the transfer is queued once (default {SUBMIT_PATIENCE:g})")
    s.add_argument("--request-id", type=_request_id, metavar="ID",
                   help="the submission's identity (default: a new one); a controller that already queued it "
                        "answers with that transfer instead of queuing it again")
    s.set_defaults(handler=run_submit)

    st = sub.add_parser("status", help="show transfers on the controller")
    st.add_argument("transfer", nargs="?", help="one transfer id (default: list recent transfers)")
    st.add_argument("--controller", help="controller address host:port")
    st.add_argument("--files", action="store_true", help="list the files of the transfer")
    st.add_argument("--wait", action="store_true",
                    help="wait until the transfer ends; print its final state (exit 1 unless done)")
    st.add_argument("--json", action="store_true", help="print JSON")
    st.set_defaults(handler=run_status)

    c = sub.add_parser("cancel", help="cancel a transfer on the controller")
    c.add_argument("transfer")
    c.add_argument("--controller", help="controller address host:port")
    c.set_defaults(handler=run_cancel)


def run_controller(args: argparse.Namespace, cfg: Config) -> int:
    import logging
    from pathlib import Path

    from domas.loop import run_async

    from .server import serve

    setup_logging()       # one line per event: names with a newline are escaped
    run_async(serve(cfg, args.listen or cfg.controller.listen, Path(args.state_dir or cfg.state_path()),
                    args.metrics_listen or "", tuple(args.root)))
    return 0


def _address(args: argparse.Namespace, cfg: Config) -> str:
    from domas.channel import controller_address

    return controller_address(args.controller, cfg.agent.controller)


def _stub(args: argparse.Namespace, cfg: Config):
    from domas.channel import auth_metadata, make_sync_channel
    from domas.v1 import domas_pb2_grpc as pb_grpc

    address = _address(args, cfg)
    channel = make_sync_channel(address, cfg.agent.tls_ca)
    return pb_grpc.ControllerStub(channel), auth_metadata(cfg.controller.token), address


def _call(fn, request, md, address: str):
    import grpc

    from .rpc_errors import error_from_rpc

    try:
        return fn(request, metadata=md, timeout=60)
    except grpc.RpcError as e:
        raise error_from_rpc(e, address) from None


def priority(text: str) -> int:
    """--priority: a whole number the controller takes (argparse reports anything else, exit 2)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not -MAX_PRIORITY <= n <= MAX_PRIORITY:
        raise argparse.ArgumentTypeError(f"must be between -{MAX_PRIORITY} and {MAX_PRIORITY}, got {text}")
    return n


SUBMIT_PATIENCE = 120.0     # seconds `domas submit` keeps asking a controller that is away


def _seconds(text: str) -> float:
    try:
        n = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= n <= 86400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text}")
    return n


def _request_id(text: str) -> str:
    if not 1 <= len(text) <= 128 or not text.isprintable() or not text.isascii():
        raise argparse.ArgumentTypeError("must be 1 to 128 printable ASCII characters")
    return text


def _patiently(call, patience: float, gave_up):
    """`call()` until it answers. A retriable failure (the controller unreachable, restarting, or its
    store busy) is tried again after a full-jitter backoff (0.2 s doubling to 5 s, a fresh channel
    each time) until `patience` seconds have passed since the first failure; then `gave_up(tries,
    last error)` is raised. Any other failure is raised at once."""
    import random

    from domas.errors import DomasError
    from domas.retry import backoff_delay

    rng, first, tries = random.Random(), None, 0
    while True:
        try:
            return call()
        except DomasError as e:
            if not e.retriable:
                raise
            tries += 1
            now = time.monotonic()
            first = now if first is None else first
            left = patience - (now - first)
            if left <= 0:
                raise gave_up(tries, e) from None
            time.sleep(min(left, backoff_delay(tries, 0.2, 5.0, rng)))


def _tries(n: int) -> str:
    return "1 try" if n == 1 else f"{n} tries"


def run_submit(args: argparse.Namespace, cfg: Config) -> int:
    import uuid

    from domas.errors import ControllerUnavailable, DomasError, NetworkTimeout, UsageError
    from domas.v1 import domas_pb2 as pb

    if len(args.paths) < 2:
        raise UsageError("give at least one source and a destination")
    opts = pb.TransferOptions(chunk_size=parse_size_flag(args.chunk_size, "--chunk-size") if args.chunk_size else 0,
                              verify=pb.VERIFY_MODE_NONE if args.verify == "none" else pb.VERIFY_MODE_FULL,
                              overwrite=args.force)
    rid = args.request_id or uuid.uuid4().hex      # one id for every try: the controller queues it once
    req = pb.SubmitTransferRequest(sources=args.paths[:-1], destination=args.paths[-1], beamline=args.beamline,
                                   priority=args.priority, options=opts, request_id=rid)
    address = _address(args, cfg)

    def submit():
        stub, md, _ = _stub(args, cfg)
        return _call(stub.SubmitTransfer, req, md, address)

    def gave_up(tries: int, e) -> DomasError:
        if not isinstance(e, (ControllerUnavailable, NetworkTimeout)):
            return e            # it answered, refusing for now (a busy store): its sentence says nothing was queued
        return ControllerUnavailable(
            f"the controller at {address} did not take the transfer in {args.retry_for:g} s ({_tries(tries)}; last: "
            f"{e}); it may or may not be queued, so run the same command again with --request-id {rid}, which "
            "queues it at most once")

    resp = _patiently(submit, args.retry_for, gave_up)
    if not args.wait:
        print(json.dumps({"transfer_id": resp.transfer_id, "files": resp.files, "bytes": resp.bytes,
                          "skipped": resp.skipped})
              if args.json else resp.transfer_id)
        return 0
    t = _wait_until_ended(args, cfg, resp.transfer_id, args.retry_for)
    _print_transfer(t, args.json)
    return 0 if t.state == pb.TRANSFER_STATE_DONE else 1


def _wait_until_ended(args, cfg: Config, transfer_id: str, patience: float = SUBMIT_PATIENCE, every: float = 0.5):
    """Poll GetStatus until the transfer is done, failed or cancelled; returns its final status. A
    controller that restarts meanwhile is asked again (`_patiently`)."""
    from domas.errors import ControllerUnavailable
    from domas.v1 import domas_pb2 as pb

    address = _address(args, cfg)
    stub = None

    def status():
        nonlocal stub
        stub = stub or _stub(args, cfg)
        try:
            return _call(stub[0].GetStatus, pb.GetStatusRequest(transfer_id=transfer_id), stub[1], address).transfer
        except Exception:
            stub = None             # a fresh channel for the next try
            raise

    def gave_up(tries: int, e) -> ControllerUnavailable:
        return ControllerUnavailable(f"the controller at {address} has not answered for {patience:g} s "
                                     f"({_tries(tries)}; last: {e}); transfer {transfer_id} goes on there: see "
                                     f"domas status {transfer_id}")

    while True:
        t = _patiently(status, patience, gave_up)
        if t.state in (pb.TRANSFER_STATE_DONE, pb.TRANSFER_STATE_FAILED, pb.TRANSFER_STATE_CANCELLED):
            return t
        time.sleep(every)


def run_status(args: argparse.Namespace, cfg: Config) -> int:
    from domas.v1 import domas_pb2 as pb

    from domas.errors import UsageError

    if args.transfer is not None and not args.transfer.strip():
        raise UsageError("the transfer id is empty; `domas status` lists the recent ones")
    stub, md, address = _stub(args, cfg)
    if (args.wait or args.files) and not args.transfer:
        flag = "--wait" if args.wait else "--files"
        raise UsageError(f"{flag} needs a transfer id: domas status ID {flag}")
    if args.wait:
        _wait_until_ended(args, cfg, args.transfer)
    if not args.transfer:
        resp = _call(stub.ListTransfers, pb.ListTransfersRequest(page_size=50), md, address)
        for t in resp.transfers:
            _print_transfer(t, args.json)
        return 0
    resp = _call(stub.GetStatus, pb.GetStatusRequest(transfer_id=args.transfer, include_files=args.files),
                 md, address)
    _print_transfer(resp.transfer, args.json, list(resp.files))
    return 0 if not args.wait or resp.transfer.state == pb.TRANSFER_STATE_DONE else 1


def run_cancel(args: argparse.Namespace, cfg: Config) -> int:
    from domas.v1 import domas_pb2 as pb

    stub, md, address = _stub(args, cfg)
    resp = _call(stub.CancelTransfer, pb.CancelTransferRequest(transfer_id=args.transfer), md, address)
    _print_transfer(resp.transfer, False)
    return 0


def _print_transfer(t, as_json: bool, files: list | None = None) -> None:
    from domas.v1 import domas_pb2 as pb

    state = pb.TransferState.Name(t.state)[len("TRANSFER_STATE_"):].lower()
    if as_json:
        doc = {"transfer_id": t.transfer_id, "state": state, "beamline": t.beamline, "files_total": t.files_total,
               "files_done": t.files_done, "files_failed": t.files_failed, "bytes_total": t.bytes_total,
               "bytes_done": t.bytes_done, "errors": {e.kind: e.count for e in t.errors}}
        if files is not None:
            doc["files"] = [{"file_id": f.file_id, "src": f.src_url, "dst": f.dst_url, "size": f.size,
                             "state": pb.FileState.Name(f.state)[len("FILE_STATE_"):].lower(),
                             "adler32": f.adler32, "error": f.error_message} for f in files]
        print(json.dumps(doc))
        return
    print(f"{t.transfer_id}  {state:9}  {t.beamline or '-':8}  files {t.files_done}/{t.files_total}"
          f" (failed {t.files_failed})  bytes {t.bytes_done}/{t.bytes_total}")
    for f in files or []:
        fstate = pb.FileState.Name(f.state)[len("FILE_STATE_"):].lower()
        print(f"  {f.file_id:>8}  {fstate:9}  {f.adler32 or '-':8}  {f.dst_url}  {f.error_message}".rstrip())
