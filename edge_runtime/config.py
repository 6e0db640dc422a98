"""One TOML config, validated into typed objects.

Unknown keys, wrong types and bad values are rejected with the file, the line
and the key path, e.g. ``edge.toml:12: vision.threshold: must be between 0 and
1, got 1.5``. The example config shipped with the package
(``edge_runtime/data/edge-runtime.example.toml``) documents every key.
"""

from __future__ import annotations

import ipaddress
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engines import ENGINES, Acceleration
from .fileio import read_text
from .schema import INDEX, SchemaError, build, check, choice

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ConfigError(Exception):
    """A config the daemon cannot use; the message is one line naming file, line and key."""


_check, _choice = check, choice  # the field checks of this module


def _upto(hi: float, above_zero: bool = True):
    """Greater than 0 (or, ``above_zero=False``, 0 or more) and at most ``hi``: every number is bounded."""
    if above_zero:
        return _check(lambda v: 0 < v <= hi, f"must be greater than 0 and at most {hi:g}")
    return _check(lambda v: 0 <= v <= hi, f"must be from 0 to {hi:g}")


_POSITIVE = _check(lambda v: v > 0, "must be greater than 0")
_NON_NEGATIVE = _check(lambda v: v >= 0, "must be 0 or more")
_SECONDS = _upto(86400.0)  # a timeout, window or cooldown: up to a day
_SECONDS_OR_ZERO = _upto(86400.0, above_zero=False)
_THREADS = _upto(256)
MAX_CONFIG_BYTES = 1 << 20  # a config file is read only up to this size
_UNIT = _check(lambda v: 0 <= v <= 1, "must be between 0 and 1")
_PORT = _check(lambda v: 0 <= v <= 65535, "must be a port number (0-65535)")
DEFAULT_FALSE_ACCEPTS_PER_HOUR = 0.5  # [audio] false_accepts_per_hour: the keyword detector's budget
MAX_FALSE_ACCEPTS_PER_HOUR = 1000.0
_FA_PER_HOUR = _check(
    lambda v: math.isfinite(v) and 0 <= v <= MAX_FALSE_ACCEPTS_PER_HOUR,
    f"must be a number of false accepts per hour from 0 to {MAX_FALSE_ACCEPTS_PER_HOUR:g}",
)


@dataclass
class CameraConfig:
    uri: str = field(
        default="0", metadata=INDEX
    )  # index, /dev/videoN, rtsp:// / http:// URL, video file or image folder
    width: int | None = field(default=None, metadata=_upto(16384))
    height: int | None = field(default=None, metadata=_upto(16384))
    fps: float | None = field(default=None, metadata=_upto(1000.0))
    fourcc: str | None = field(default=None, metadata=_check(lambda v: len(v) == 4, "must be 4 characters, e.g. MJPG"))
    stride: int = field(default=1, metadata=_upto(1000))
    stall_timeout_s: float = field(default=2.0, metadata=_SECONDS)
    loop: bool = False


@dataclass
class MicrophoneConfig:
    device: str | None = field(default=None, metadata=INDEX)  # name substring or index; None = the default input
    file: str | None = None  # a WAV file instead of a device (demos, tests)
    realtime: bool = True  # pace a file in real time
    loop: bool = False
    # 80 ms blocks: 12.5 wake-ups a second (20 ms blocks cost about twice the CPU in real time)
    block_ms: int = field(default=80, metadata=_upto(10000))


@dataclass
class ModelConfig(Acceleration):
    """What every model section says: the artifact folder, the engine, its threads and where it runs
    (the delegates and providers of :class:`~edge_runtime.engines.Acceleration`)."""

    model: str = "default"  # "default" (the shipped model of the section) or an artifact folder
    engine: str = field(default="auto", metadata=_choice("auto", *ENGINES))
    threads: int | None = field(default=None, metadata=_THREADS)


@dataclass
class VisionConfig(ModelConfig):
    top_k: int = field(default=3, metadata=_upto(1000))
    threshold: float = field(default=0.5, metadata=_UNIT)


@dataclass
class AudioConfig(ModelConfig):
    threshold: float | None = field(default=None, metadata=_UNIT)  # set: overrides false_accepts_per_hour
    # the lowest threshold on the model's validation curve within this many false accepts per hour:
    false_accepts_per_hour: float = field(default=DEFAULT_FALSE_ACCEPTS_PER_HOUR, metadata=_FA_PER_HOUR)
    smoothing_steps: int | None = field(default=None, metadata=_upto(1000))
    refractory_s: float | None = field(default=None, metadata=_SECONDS_OR_ZERO)


@dataclass
class Condition:
    modality: str = "vision"  # a pipeline's modality (checked against the registered pipelines)
    label: str = ""
    min_score: float = field(default=0.0, metadata=_UNIT)
    phrase: str = ""  # a speech phrase of the grammar: the label of a speech decision, said as text

    def __post_init__(self) -> None:
        if self.phrase:
            said = " ".join(self.phrase.lower().split())
            if self.label and self.label != said:  # (a copy of a parsed condition carries both, alike)
                raise SchemaError(("phrase",), "give label or phrase, not both")
            self.label = said


@dataclass
class RuleConfig:
    """Event ``name`` when every condition holds within ``within_s`` seconds."""

    name: str = ""
    all: list[Condition] = field(default_factory=list)
    within_s: float = field(default=1.5, metadata=_SECONDS)
    cooldown_s: float = field(default=2.0, metadata=_SECONDS_OR_ZERO)


@dataclass
class WeightedConfig:
    """Weighted score fusion over a shared label map: event when the fused score passes the threshold."""

    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # event -> {modality: model label}
    weights: dict[str, float] = field(default_factory=lambda: {"vision": 0.5, "audio": 0.5})
    threshold: float = field(default=0.6, metadata=_UNIT)
    window_s: float = field(default=1.5, metadata=_SECONDS)
    cooldown_s: float = field(default=2.0, metadata=_SECONDS_OR_ZERO)


@dataclass
class FusionConfig:
    rules: list[RuleConfig] = field(default_factory=list)
    weighted: WeightedConfig | None = None
    passthrough: bool = True  # every Decision also becomes an event of its own label
    passthrough_cooldown_s: float = field(default=2.0, metadata=_SECONDS_OR_ZERO)


@dataclass
class JsonlConfig:
    path: str = "-"  # "-" = standard output
    max_bytes: int = field(default=10 * 1024 * 1024, metadata=_upto(1 << 40))
    backups: int = field(default=3, metadata=_upto(1000, above_zero=False))


MAX_HTTP_CONNECTIONS = 64
MAX_TOKEN_BYTES = 4096


@dataclass
class HttpConfig:
    host: str = "127.0.0.1"  # not loopback: token_file is required
    port: int = field(default=8080, metadata=_PORT)
    token_file: str | None = None  # a file holding the bearer token /status and /metrics require
    timeout_s: float = field(
        default=5.0,
        metadata=_check(
            lambda v: math.isfinite(v) and 0 < v <= 300, "must be a number of seconds, more than 0 and at most 300"
        ),
    )
    max_connections: int = field(
        default=16,
        metadata=_check(lambda v: 1 <= v <= MAX_HTTP_CONNECTIONS, f"must be from 1 to {MAX_HTTP_CONNECTIONS}"),
    )


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses; an empty host (every interface) or any other name is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(path: str) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped); ValueError says what is wrong."""
    token = read_text(path, MAX_TOKEN_BYTES, "token file", "put only the token in it").strip()
    if not token or any(c.isspace() or not c.isprintable() for c in token):
        raise ValueError(
            f"{path}: the token file must hold one token (printable, no spaces), e.g. from `openssl rand -hex 32`"
        )
    return token


@dataclass
class SinksConfig:
    jsonl: JsonlConfig | None = None
    http: HttpConfig | None = None
    # [sinks.<table>] of a sink that declares its own config where it registers (edge_runtime/sinks/:
    # mqtt, webhook)
    more: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    @classmethod
    def extra_tables(cls) -> dict[str, type]:
        from .sinks import config_tables

        return config_tables()


@dataclass
class RuntimeConfig:
    log_level: str = field(default="info", metadata=_choice("debug", "info", "warning", "error"))
    queue_size: int = field(default=64, metadata=_upto(100000))
    duration_s: float | None = field(default=None, metadata=_POSITIVE)  # stop this long after ready (demos, tests)


@dataclass
class Config:
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    camera: CameraConfig | None = None
    microphone: MicrophoneConfig | None = None
    vision: VisionConfig | None = None
    audio: AudioConfig | None = None
    fusion: FusionConfig = field(default_factory=FusionConfig)
    sinks: SinksConfig = field(default_factory=SinksConfig)
    path: str = field(default="", metadata={"internal": True})  # the file it came from (not a TOML key)
    # the sections of pipelines (and their sources) that declare their own config (edge_runtime/pipelines/)
    more: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    def __post_init__(self) -> None:
        self.sinks = self.sinks or SinksConfig()

    @classmethod
    def extra_tables(cls) -> dict[str, type]:
        from .pipelines.runner import kinds

        tables: dict[str, type] = {}
        for k in kinds().values():
            tables.update({n: c for n, c in ((k.name, k.config), (k.source_name, k.source_config)) if c})
        return tables

    def section(self, name: str) -> Any:
        """The section ``[name]`` (None when not set), a field here or a table a pipeline declares."""
        return getattr(self, name) if name in self.__dataclass_fields__ else self.more.get(name)


# --- loading -----------------------------------------------------------------------
def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = read_text(p, MAX_CONFIG_BYTES, "config", "no config is that large; pass the TOML file")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return parse(text, str(p))


def parse(text: str, where: str = "<config>") -> Config:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: not valid TOML ({e})") from None
    except RecursionError:
        raise ConfigError(f"{where}: arrays or tables nested too deeply; a config needs a few levels") from None
    loc = _Locator(text, where)
    try:
        cfg = build(Config, data)
    except SchemaError as e:
        raise loc.error(e.keys, e.msg) from None
    cfg.path = where
    _cross_checks(cfg, loc)
    return cfg


MAX_LOCATED_LINE = 256  # characters of a line the locator looks at
_KEY = re.compile(r'("?)([A-Za-z0-9_\-]{1,128})\1\s*=')  # a bare or quoted key; linear on any line


class _Locator:
    """Finds the line of a key path in the TOML text, for error messages (linear in the text)."""

    def __init__(self, text: str, where: str):
        self.lines = text.splitlines()
        self.where = where

    def line(self, keys: tuple[str | int, ...]) -> int | None:
        names = [k for k in keys if isinstance(k, str)]
        if not names:
            return None
        table, key = names[:-1], names[-1]
        current: list[str] = []
        best = None
        for n, raw in enumerate(self.lines, 1):
            line = raw[:MAX_LOCATED_LINE].split("#", 1)[0].strip()
            if line.startswith("[") and line.endswith("]"):  # [table] or [[array of tables]]
                current = [s.strip().strip('"') for s in line.strip("[]").split(".")]
                if current == names:
                    best = best or n
                continue
            km = _KEY.match(line)
            if km and km.group(2) == key and current == table:
                return n
            if km and current == table[: len(current)] and key in line.split("=", 1)[0]:
                best = best or n
        return best

    def error(self, keys: tuple[str | int, ...], msg: str) -> ConfigError:
        line = self.line(keys)
        return ConfigError(f"{self.where}{f':{line}' if line else ''}: {SchemaError(keys, msg).dotted()}: {msg}")


def _cross_checks(cfg: Config, loc: _Locator) -> None:
    from .pipelines.runner import kinds

    pipelines = kinds().values()
    for k in pipelines:
        if cfg.section(k.name) is not None and cfg.section(k.source_name) is None:
            raise loc.error((k.name,), f"needs a [{k.source_name}] section to read {k.reads} from")
    if all(cfg.section(k.name) is None for k in pipelines):
        raise ConfigError(
            f"{loc.where}: configure at least one of "
            + " or ".join(f"[{k.name}] (with [{k.source_name}])" for k in pipelines)
        )
    _check_fusion(cfg, loc, [k.modality for k in pipelines])
    _check_sinks(cfg, loc)
    _check_sources(cfg, loc, [k.source_name for k in pipelines])


def _check_fusion(cfg: Config, loc: _Locator, modalities: list[str]) -> None:
    for i, rule in enumerate(cfg.fusion.rules):
        if not rule.name:
            raise loc.error(("fusion", "rules", i, "name"), "every rule needs a name")
        if not rule.all:
            raise loc.error(("fusion", "rules", i, "all"), "a rule needs at least one condition")
        for j, c in enumerate(rule.all):
            if c.modality not in modalities:
                raise loc.error(
                    ("fusion", "rules", i, "all", j, "modality"),
                    f"must be one of {', '.join(modalities)}, got {c.modality!r:.80}",
                )
    if cfg.fusion.weighted:
        bad = [m for m in cfg.fusion.weighted.weights if m not in modalities]
        if bad:
            raise loc.error(
                ("fusion", "weighted", "weights", bad[0]), f"weights are per modality: {', '.join(modalities)}"
            )
        for m, w in cfg.fusion.weighted.weights.items():
            if not w >= 0:
                raise loc.error(("fusion", "weighted", "weights", m), f"must be 0 or more, got {w!r}")
        if not sum(cfg.fusion.weighted.weights.values()) > 0:
            raise loc.error(("fusion", "weighted", "weights"), "at least one weight must be greater than 0")


def _check_sinks(cfg: Config, loc: _Locator) -> None:
    http = cfg.sinks.http
    if http and http.token_file is not None:
        try:
            read_token(http.token_file)
        except ValueError as e:
            raise loc.error(("sinks", "http", "token_file"), str(e)) from None
    elif http and not is_loopback(http.host):
        raise loc.error(
            ("sinks", "http", "host"),
            f"{http.host or 'every interface'} is not a loopback address: set "
            "token_file (a file holding a bearer token) or bind 127.0.0.1",
        )


def _check_sources(cfg: Config, loc: _Locator, sections: list[str]) -> None:
    """Each source section is read by a registered source kind, and what it names is there (a camera
    device or sound card may come later; files not)."""
    from .sources import SourceConfigError, resolve

    for section in dict.fromkeys(sections):
        if cfg.section(section) is not None:
            try:
                resolve(section, cfg.section(section))
            except SourceConfigError as e:
                raise loc.error((section, e.key) if e.key else (section,), str(e)) from None
