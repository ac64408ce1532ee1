"""The one configuration object: a frozen dataclass tree, loaded once and passed explicitly.

Sources, later ones winning: built-in defaults, a TOML file (`--config` or DOMAS_CONFIG), then
`DOMAS_<SECTION>_<KEY>` environment overrides (e.g. DOMAS_COPY_STREAMS=16). `load()` takes the
environment as an argument so nothing here reads os.environ behind the caller's back.
Every invalid value raises ConfigError naming the key.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from collections.abc import Mapping

from domas.errors import ConfigError, UsageError

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_SIZE_UNITS = {"": 1, "b": 1, "k": KiB, "kb": KiB, "kib": KiB, "m": MiB, "mb": MiB, "mib": MiB,
               "g": GiB, "gb": GiB, "gib": GiB, "t": 1024 * GiB, "tb": 1024 * GiB, "tib": 1024 * GiB}
_MAX_NUMBER = (1 << 63) - 1           # past this no size or duration is meant (and int64 fields overflow)
_MAX_DURATION = 1000 * 365 * 86400.0
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_size(value: str | int, key: str = "size") -> int:
    """'8MiB', '8M', '512k', 4096 -> bytes (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m.group(2).lower() not in _SIZE_UNITS:
            raise ConfigError(f"{key}: {value!r} is not a size (examples: 8MiB, 512k, 1048576)")
        n = float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
    if n <= 0:
        raise ConfigError(f"{key}: must be positive, got {value!r}")
    if n > _MAX_NUMBER:
        raise ConfigError(f"{key}: {_shown(value)} is too large to be a size")
    return int(n)


def parse_size_flag(value: str, flag: str) -> int:
    """A size given on the command line (--chunk-size): a usage error (exit 2) naming the flag."""
    try:
        return parse_size(value, flag)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def parse_duration(value: str | int | float, key: str = "duration") -> float:
    """'7d', '12h', '30m', '5s', 90 -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        secs = float(value) if abs(value) <= _MAX_NUMBER else math.inf
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]?)\s*", str(value))
        if not m or m.group(2).lower() not in _DURATION_UNITS:
            raise ConfigError(f"{key}: {value!r} is not a duration (examples: 90d, 12h, 30m, 5s)")
        secs = float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
    if secs < 0:
        raise ConfigError(f"{key}: must not be negative, got {value!r}")
    if not secs <= _MAX_DURATION:      # nan, inf, or past any clock
        raise ConfigError(f"{key}: {_shown(value)} is not a duration of at most 1000 years")
    return secs


def _shown(value: object) -> str:
    """A value for an error sentence, cut short if it is long (a size of 400 digits)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def default_streams(cpu_count: int | None = None) -> int:
    """Chunks in flight: I/O bound, so a few per core, at least 4 and at most 32."""
    return max(4, min(32, 4 * (cpu_count or os.cpu_count() or 1)))


@dataclass(frozen=True)
class CopyConfig:
    """How copies run: streams, chunk size, verification, retries, resume ([copy])."""

    streams: int = field(default_factory=default_streams)
    chunk_size: int = 8 * MiB
    verify: str = "default"          # "default" | "none"
    resume: bool = True
    max_retries: int = 5
    backoff_base: float = 0.2        # seconds
    backoff_max: float = 30.0        # seconds
    # A storage that stops answering (timeout, lost connection, refused) is retried for at least
    # this long, whatever max_retries says: long enough to outlast a server restart.
    retry_budget_seconds: float = 300.0
    # Make one-chunk files durable in groups (one syncfs, then their read-back) rather than one
    # fdatasync each. Off: on ext4 with parallel streams the journal already batches concurrent
    # fsyncs, and grouping measured slower (benchmarks/RESULTS.md); for disks where it does not.
    group_sync: bool = False

    def validate(self) -> None:
        if self.streams < 1 or self.streams > 1024:
            raise ConfigError(f"copy.streams: must be between 1 and 1024, got {self.streams}")
        if self.chunk_size < 4 * KiB or self.chunk_size > 1 * GiB:
            raise ConfigError(f"copy.chunk_size: must be between 4KiB and 1GiB, got {self.chunk_size}")
        if self.verify not in ("default", "none"):
            raise ConfigError(f"copy.verify: must be 'default' or 'none', got {self.verify!r}")
        if self.max_retries < 0:
            raise ConfigError("copy.max_retries: must not be negative")
        if not 0 <= self.retry_budget_seconds <= 7 * 86400:
            raise ConfigError(f"copy.retry_budget_seconds: must be between 0 and 604800, got "
                              f"{self.retry_budget_seconds}")


@dataclass(frozen=True)
class StorageConfig:
    """The storage tiers' roots ([storage])."""

    beamline: str = ""
    central: str = ""
    tape: str = ""
    endpoints: tuple[tuple[str, str], ...] = ()     # [storage.endpoints] NAME = "path or root:// URL"

    def roots(self) -> tuple[tuple[str, str], ...]:
        """(key, location) of every storage root declared: the tiers, then the named endpoints."""
        tiers = tuple((f"storage.{t}", getattr(self, t)) for t in ("beamline", "central", "tape") if getattr(self, t))
        return tiers + tuple((f"storage.endpoints.{name}", url) for name, url in self.endpoints)


@dataclass(frozen=True)
class PolicyConfig:
    """The data policy: retention per tier and the stability window ([policy])."""

    beamline_retention: float = 7 * 86400.0
    central_retention: float = 90 * 86400.0
    stability_seconds: float = 30.0
    rescan_seconds: float = 60.0
    archive_dirs: tuple[str, ...] = ("raw", "processed")
    scrub_interval: float = 30 * 86400.0     # re-read every central/tape copy this often (0: never)
    scrub_rate: int = 50 * MiB               # bytes per second the scrubber may read


@dataclass(frozen=True)
class CatalogueConfig:
    """Where the catalogue lives and how PIDs are minted ([catalogue])."""

    url: str = ""                    # sqlite:///path or mongodb://host:port/db ; "" = embedded default
    pid_prefix: str = "CSTR:17058.11.HEPS"


@dataclass(frozen=True)
class ControllerConfig:
    """The control node: listen addresses, token, TLS and OIDC, lease length, submission limits ([controller])."""

    listen: str = "127.0.0.1:7400"
    metrics_listen: str = "127.0.0.1:9400"
    http_listen: str = "127.0.0.1:8400"
    token: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_client_ca: str = ""
    lease_seconds: float = 60.0
    oidc_issuer: str = ""            # OpenID Connect issuer URL the data service trusts for bearer JWTs
    oidc_audience: str = "domas"     # the `aud` those tokens must name
    http_metrics_token: str = ""     # a bearer token that opens the data service's /metrics, and nothing else
    http_metrics_allow: tuple[str, ...] = ()   # addresses/networks whose requests read /metrics with no token
    max_files_per_transfer: int = 1_000_000
    max_sources_per_transfer: int = 100_000

    def validate(self) -> None:
        for key in ("max_files_per_transfer", "max_sources_per_transfer"):
            if not 1 <= getattr(self, key) <= 100_000_000:
                raise ConfigError(f"controller.{key}: must be between 1 and 100000000, got {getattr(self, key)}")


@dataclass(frozen=True)
class AgentConfig:
    """A transfer agent: its controller, name and metrics address ([agent])."""

    controller: str = "127.0.0.1:7400"
    name: str = ""
    metrics_listen: str = "127.0.0.1:9401"
    lease_batch: int = 16
    tls_ca: str = ""


@dataclass(frozen=True)
class AmqpSourceConfig:
    """The message-bus source of closed-file and scan documents ([source.amqp])."""

    url: str = ""                    # amqp://user:password@host:5672/vhost ; "" = this source is off
    exchange: str = "domas"
    queue: str = "domas.archiver"
    prefetch: int = 10000            # unacknowledged messages the broker may hand over at once
    files_grace: float = 600.0       # a run with no file this long after its stop is reported


@dataclass(frozen=True)
class SourceConfig:
    """Discovery sources (domas.archive.sources): the tree scan and message-bus consumers."""

    scan: bool = True                # the tree scan, the safety net that finds what no one announced
    inotify: bool = False            # filesystem events: closed and moved-in files taken at once (Linux)
    full_scan_seconds: float = 3600.0  # with inotify on, the tree scan runs this rarely (and on queue overflow)
    amqp: AmqpSourceConfig = field(default_factory=AmqpSourceConfig)

    def validate(self) -> None:
        if self.full_scan_seconds <= 0:
            raise ConfigError(f"source.full_scan_seconds: must be positive, got {self.full_scan_seconds}")
        if not self.amqp.exchange or not self.amqp.queue:
            raise ConfigError("source.amqp: exchange and queue must not be empty")
        if not 1 <= self.amqp.prefetch <= 65535:
            raise ConfigError(f"source.amqp.prefetch: must be between 1 and 65535, got {self.amqp.prefetch}")
        if self.amqp.url and not self.amqp.url.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"source.amqp.url: {self.amqp.url!r} is not an amqp:// or amqps:// URL")


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen tree, loaded once by load() and passed explicitly."""

    state_dir: str = ""
    data_dir: str = ""               # one base directory: state_dir and empty tiers derive from it
    config_file: str = ""            # the TOML file this was loaded from ("" = none)
    copy: CopyConfig = field(default_factory=CopyConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    catalogue: CatalogueConfig = field(default_factory=CatalogueConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    source: SourceConfig = field(default_factory=SourceConfig)

    def with_copy(self, **changes: object) -> "Config":
        new = replace(self, copy=replace(self.copy, **{k: v for k, v in changes.items() if v is not None}))
        new.copy.validate()
        return new

    def state_path(self) -> Path:
        if not self.state_dir:
            raise ConfigError(f"data_dir: the configuration {self.config_file} sets neither data_dir nor state_dir; "
                              "set one, so this deployment keeps its state in a place of its own")
        return Path(self.state_dir).expanduser()


_SIZE_KEYS = {"copy.chunk_size", "policy.scrub_rate"}
_DURATION_KEYS = {"policy.beamline_retention", "policy.central_retention", "policy.stability_seconds",
                  "policy.rescan_seconds", "policy.scrub_interval", "copy.backoff_base", "copy.backoff_max",
                  "copy.retry_budget_seconds", "controller.lease_seconds", "source.amqp.files_grace",
                  "source.full_scan_seconds"}


_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def _endpoints(value: object) -> tuple[tuple[str, str], ...]:
    """[storage.endpoints] as a TOML table, or DOMAS_STORAGE_ENDPOINTS="name=url,name2=url2"."""
    if isinstance(value, str):
        pairs = [item.partition("=")[::2] for item in value.split(",") if item.strip()]
        value = {name.strip(): url.strip() for name, url in pairs}
    if not isinstance(value, dict):
        raise ConfigError('storage.endpoints: must be a table of NAME = "path or root:// URL"')
    for name, url in value.items():
        if not _ENDPOINT_NAME.fullmatch(name):
            raise ConfigError(f"storage.endpoints: {name!r} is not a name (letters, digits, '_', '.', '-'; at most 64)")
        if not isinstance(url, str) or not url:
            raise ConfigError(f"storage.endpoints.{name}: must be a path or a root:// URL")
    return tuple(sorted(value.items()))


def _coerce(key: str, value: object, current: object) -> object:
    if key == "storage.endpoints":
        return _endpoints(value)
    if key in _SIZE_KEYS:
        return parse_size(value, key)
    if key in _DURATION_KEYS:
        return parse_duration(value, key)
    if isinstance(current, bool):
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes", "on"):
            return True
        if str(value).lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: {value!r} is not a boolean (true/false)")
    if isinstance(current, int):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not an integer") from None
    if isinstance(current, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: {value!r} is not a number") from None
    if isinstance(current, tuple):
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
            raise ConfigError(f"{key}: must be a list of strings")
        return tuple(i.strip() for i in items if i.strip())
    if not isinstance(value, str):
        raise ConfigError(f"{key}: must be a string, got {value!r}")
    return value


def _apply(cfg: Config, section: str | None, key: str, value: object) -> Config:
    if section is None:
        if key not in ("state_dir", "data_dir"):
            raise ConfigError(f"{key}: unknown key (top level: data_dir, state_dir; sections: copy, storage, policy, catalogue, controller, agent)")
        return replace(cfg, **{key: _coerce(key, value, getattr(cfg, key))})
    sub = getattr(cfg, section, None)
    if sub is None or not dataclasses.is_dataclass(sub):
        raise ConfigError(f"[{section}]: unknown section (known: copy, storage, policy, catalogue, controller, agent, source)")
    head, _, rest = key.partition("_")
    if key not in {f.name for f in fields(sub)} and rest and dataclasses.is_dataclass(getattr(sub, head, None)):
        key, value = head, {rest: value}          # DOMAS_SOURCE_AMQP_URL -> [source.amqp] url
    if key not in {f.name for f in fields(sub)}:
        known = ", ".join(f.name for f in fields(sub))
        raise ConfigError(f"{section}.{key}: unknown key (known in [{section}]: {known})")
    full = f"{section}.{key}"
    if dataclasses.is_dataclass(getattr(sub, key)):
        return replace(cfg, **{section: replace(sub, **{key: _table(full, value, getattr(sub, key))})})
    return replace(cfg, **{section: replace(sub, **{key: _coerce(full, value, getattr(sub, key))})})


def _table(name: str, value: object, current: object) -> object:
    """A nested table such as [source.amqp], applied key by key onto its dataclass."""
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}]: must be a table of keys")
    for key, v in value.items():
        if key not in {f.name for f in fields(current)}:
            known = ", ".join(f.name for f in fields(current))
            raise ConfigError(f"{name}.{key}: unknown key (known in [{name}]: {known})")
        current = replace(current, **{key: _coerce(f"{name}.{key}", v, getattr(current, key))})
    return current


def _locations(cfg: Config, path, env: Mapping[str, str]) -> Config:
    """Where state and tiers live. With a configuration file, relative data_dir/state_dir count from
    its directory, and nothing falls back to a per-user default (two deployments never share state);
    data_dir gives state_dir (data_dir/state) and every empty tier (data_dir/<tier>)."""
    if path:
        base = Path(path).resolve().parent
        cfg = replace(cfg, **{k: os.path.normpath(base / Path(getattr(cfg, k)).expanduser())    # "../data" too
                              for k in ("data_dir", "state_dir") if getattr(cfg, k)})
        here = lambda where: where if not where or "://" in where else os.path.normpath(base / Path(where).expanduser())  # noqa: E731
        cfg = replace(cfg, storage=replace(cfg.storage, **{t: here(getattr(cfg.storage, t))
                                                           for t in ("beamline", "central", "tape")},
                                           endpoints=tuple((n, here(w)) for n, w in cfg.storage.endpoints)))
    if cfg.data_dir:
        d = Path(cfg.data_dir).expanduser()
        tiers = {t: getattr(cfg.storage, t) or str(d / t) for t in ("beamline", "central", "tape")}
        cfg = replace(cfg, state_dir=cfg.state_dir or str(d / "state"), storage=replace(cfg.storage, **tiers))
    if not cfg.state_dir and not path:
        cfg = replace(cfg, state_dir=default_state_dir(env))
    return cfg


def read_setting_file(key: str, path: str) -> bytes:
    """The bytes of a file a setting names (a certificate, a key); a file that cannot be read is
    one sentence naming the setting."""
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise ConfigError(f"{key}: cannot read {path}: {e.strerror or e}") from None


def default_state_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_STATE_HOME") or os.path.join(env.get("HOME", "/tmp"), ".local", "state")
    return os.path.join(base, "domas")


UP_CONFIG = os.path.join("domas-data", "domas.toml")


def _instance_config() -> str | None:
    """The configuration `domas up` wrote in the current directory, if any (found like .git)."""
    return UP_CONFIG if os.path.isfile(UP_CONFIG) else None


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Build the configuration from defaults, an optional TOML file and DOMAS_* overrides."""
    env = dict(env or {})
    path = path or env.get("DOMAS_CONFIG") or _instance_config()
    cfg = Config(config_file=str(path or ""))
    if path:
        import tomllib      # only with a file to read: 3 ms of every start of a short command without one

        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {path} is a directory; give the TOML file in it") from None
        except OSError as e:
            raise ConfigError(f"config file {path} cannot be read ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path} is not valid TOML: it is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
        for name, value in doc.items():
            if isinstance(value, dict):
                for key, v in value.items():
                    cfg = _apply(cfg, name, key, v)
            else:
                cfg = _apply(cfg, None, name, value)
    for var, value in sorted(env.items()):
        if not var.startswith("DOMAS_") or var in _ENV_NOT_CONFIG:
            continue
        rest = var[len("DOMAS_"):].lower()
        if rest in ("state_dir", "data_dir"):
            cfg = _apply(cfg, None, rest, value)
            continue
        section, _, key = rest.partition("_")
        if section in _SECTIONS and key:
            cfg = _apply(cfg, section, key, value)
    cfg = _locations(cfg, path, env)
    if env.get("DOMAS_TOKEN") and not cfg.controller.token:
        cfg = replace(cfg, controller=replace(cfg.controller, token=env["DOMAS_TOKEN"]))
    cfg.copy.validate()
    cfg.source.validate()
    cfg.controller.validate()
    return cfg


_SECTIONS = {"copy", "storage", "policy", "catalogue", "controller", "agent", "source"}
_ENV_NOT_CONFIG = {"DOMAS_CONFIG", "DOMAS_NO_EXTENSIONS", "DOMAS_TOKEN", "DOMAS_TEST_MONGODB_URI",
                   "DOMAS_EXT_DEBUG", "DOMAS_EXT_OPTIONAL"}
