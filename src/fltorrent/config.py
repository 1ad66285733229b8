"""The configuration tree: pydantic models of the YAML file. The only place defaults live.

Every key has a default, so an empty file is a valid configuration. Unknown keys, wrong types
and out-of-range values are refused with the key's path (``bittorrent.timeout: ...``) before
anything starts. The sections ``federate``, ``topology``, ``bittorrent`` and ``chunk`` keep the
key names of the original FLTorrent configuration; the others are ours.

Components never read this tree: ``runtime`` turns it into explicit keyword arguments. Some
sections live beside this module for size (``config_chunks``, ``config_plans``,
``config_robust``, ``config_output``), on the shared base of ``config_types``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from fltorrent.config_chunks import ChunkConfig
from fltorrent.config_learn import DataConfig, ModelConfig, TrainConfig
from fltorrent.config_output import OutputConfig
from fltorrent.config_plans import ExchangeConfig, SelectionConfig
from fltorrent.config_robust import AttackConfig, RobustConfig
from fltorrent.config_security import SecurityConfig
from fltorrent.config_types import Fraction, Mbit, PositiveInt, Seconds, Section
from fltorrent.devices.availability import load_traces
from fltorrent.devices.policy import COMPRESSION_BY_TIER
from fltorrent.devices.profiles import (
    DEFAULT_PROFILES,
    DeviceProfile,
    assign_profiles,
    profile_from_mapping,
)
from fltorrent.errors import ConfigError
from fltorrent.topology import build_topology


class FederateConfig(Section):
    """Who takes part and for how long (FederatedScope / FLTorrent names)."""

    client_num: PositiveInt = 8
    total_round_num: PositiveInt = 20
    mode: Literal["distributed", "sim"] = Field(
        "distributed",
        description="'distributed': every peer exchanges over real sockets; 'sim': every peer "
        "in one process over an in-memory network on a virtual clock",
    )
    seed: int = Field(0, ge=0)
    federation_id: str = Field("fltorrent", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")


class TopologyConfig(Section):
    """The overlay graph among peers."""

    use: bool = True
    type: Literal["star", "ring", "mesh", "tree", "full", "custom"] = "mesh"
    connections: PositiveInt = 3
    branching: PositiveInt = 2
    custom_graph: dict[int, list[int]] | None = None
    timeout: Seconds = Field(
        60.0,
        description="the overlay's construction deadline (FLTorrent's name): a peer's "
        "overlay neighbours still unconnected this many seconds after it started are logged "
        "(checked at each round's end) "
        "(a warning, topology_incomplete in topology_logs/ and in summary.json); nothing waits "
        "for it, pieces flow through the neighbours that are up",
    )
    max_connection_attempts: int = Field(
        0,
        ge=0,
        description="failed dials in a row before a peer gives up on a neighbour until it "
        "rejoins (0: keep trying, with backoff up to 2 s)",
    )


class BitTorrentConfig(Section):
    """The exchange: deadlines, completion threshold, piece and pipeline settings."""

    enable: bool = Field(True, description="must stay true: the swarm is the exchange")
    timeout: Seconds = Field(
        600.0,
        description="soft per-round exchange deadline: after it, a peer goes on as soon "
        "as min_completion_ratio of the pieces arrived",
    )
    hard_timeout: Seconds | None = Field(
        None, description="hard deadline: the round goes on with what arrived (default 2x timeout)"
    )
    chunk_selection: Literal["rarest_first"] = "rarest_first"
    min_completion_ratio: Fraction = 0.8
    block_size: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    max_frame_size: int = Field(2 * 1024 * 1024, ge=64 * 1024, le=64 * 1024 * 1024)
    max_inflight_bytes: int = Field(4 * 1024 * 1024, ge=16 * 1024)
    request_timeout: Seconds = 30.0
    connect_timeout: Seconds = 5.0
    idle_timeout: Seconds = 120.0
    keepalive_interval: Seconds = 30.0
    upload_slots: int = Field(
        0,
        ge=0,
        description="neighbours sent piece data at once, in turns (0: all at once); 4 pays "
        "off on constrained uplinks, costs about 10 % on fast unshaped links",
    )
    pipeline_seconds: Seconds = Field(
        0.1,
        description="requests queued per neighbour beyond the round trip, in seconds of its "
        "measured rate; shallower (0.03) with one upload slot spreads a broadcast from one "
        "holder faster",
    )
    super_seeding: bool = Field(
        False,
        description="show each neighbour only a few pieces of our own new update, so that "
        "each piece leaves us about once and neighbours relay the rest (BEP 16); pays off "
        "when uplinks are the bottleneck, costs round trips on fast links",
    )
    critical_window: Fraction = Field(
        0.25,
        description="from (1 - critical_window) x timeout after the exchange starts until the "
        "round's exchange ends, the picker fetches the round's most important missing pieces "
        "first, whatever their availability (0: never)",
    )
    seed_grace: float = Field(
        10.0, ge=0.0, description="seconds a finished peer keeps seeding for late peers"
    )
    silence_factor: float = Field(
        3.0,
        ge=0.0,
        description="once every author that published has delivered, members that published "
        "nothing yet are waited for this many times the exchange's time so far (at least "
        "silence_floor), not until the deadlines (0: until the deadlines)",
    )
    silence_floor: Seconds = Field(10.0, description="see silence_factor")

    @model_validator(mode="after")
    def _block_fits_frame(self) -> BitTorrentConfig:
        if self.block_size + 64 > self.max_frame_size:
            raise ValueError("block_size must be smaller than max_frame_size")
        if self.hard_timeout is not None and self.hard_timeout < self.timeout:
            raise ValueError("hard_timeout must be at least timeout")
        return self


Codec = Literal["none", "topk", "q8"]


class NetworkConfig(Section):
    """Default link of a peer without a device profile (no rate: unshaped)."""

    up_mbit: Mbit | None = None
    down_mbit: Mbit | None = None
    latency_ms: float = Field(0.0, ge=0.0)
    jitter_ms: float = Field(0.0, ge=0.0)
    loss: float = Field(0.0, ge=0.0, lt=1.0)

    @property
    def shaped(self) -> bool:
        """Whether any shaping applies."""
        return (
            self.up_mbit is not None
            or self.down_mbit is not None
            or self.latency_ms > 0
            or self.jitter_ms > 0
            or self.loss > 0
        )


class PolicyConfig(Section):
    """Mobile policies (see fltorrent.devices.policy)."""

    min_battery: Fraction = 0.2
    charging_only: bool = False
    thermal_pause: bool = True
    wifi_preferred: bool = True
    large_transfer_bytes: int = Field(1_000_000, ge=0)


class AvailabilityConfig(Section):
    """When a device's owner lets it train."""

    model: Literal["always", "diurnal", "trace"] = "always"
    trace_file: Path | None = Field(
        None, description="YAML or JSON: {peer id: [[start s, end s], ...]} active intervals"
    )
    p_online: Fraction = Field(0.8, description="diurnal: chance of being online at night")


class DevicesConfig(Section):
    """Device profiles and behaviour. No distribution: no device model."""

    distribution: dict[str, Fraction] | None = None
    profiles: dict[str, dict[str, Any]] = Field(default_factory=dict)
    core_gflops: float = Field(
        6.0,
        gt=0.0,
        description="training GFLOP/s of one reference core (cpu_share 1.0); measured on the "
        "development machine for the bundled models: 5.2 (mlp) to 6.9 (cnn1d)",
    )
    start_hour: float = Field(9.0, ge=0.0, lt=24.0)
    charging_hours: list[tuple[float, float]] = Field(default_factory=lambda: [(22.0, 7.0)])
    compression: Literal["auto", "none", "topk", "q8"] = Field(
        "auto", description="'auto': by device tier (tier_compression); else for every device"
    )
    tier_compression: dict[Literal["high", "mid", "low", "embedded"], Codec] = Field(
        default_factory=lambda: dict(COMPRESSION_BY_TIER),
        description="codec per device tier when compression is 'auto'",
    )
    topk_ratio: float = Field(0.1, gt=0.0, le=1.0)
    policy: PolicyConfig = PolicyConfig()
    availability: AvailabilityConfig = AvailabilityConfig()

    @model_validator(mode="after")
    def _check_profiles(self) -> DevicesConfig:
        # Raises ConfigError naming the key (unknown profile, bad share sum, bad user profile).
        known = self.all_profiles()
        if self.distribution is not None:
            assign_profiles(self.distribution, 0, 0, known)
        av = self.availability
        if av.model == "trace":
            if av.trace_file is None:
                raise ConfigError("model 'trace' needs trace_file", path="devices.availability")
            load_traces(av.trace_file)  # a bad file is refused now, naming it
        return self

    def all_profiles(self) -> dict[str, DeviceProfile]:
        """Default profiles plus user-defined ones (which may extend them)."""
        known = dict(DEFAULT_PROFILES)
        for name, raw in self.profiles.items():
            known[name] = profile_from_mapping(name, raw, known)
        return known


class FaultsConfig(Section):
    """Churn: peers that crash and (optionally) rejoin."""

    crash_share: Fraction = Field(0.0, description="share of peers crashing at crash_round")
    crash_round: PositiveInt = 1
    crash_rate: Fraction = Field(0.0, description="per peer and round, crash probability")
    crash_rounds: dict[int, list[int]] = Field(
        default_factory=dict, description="explicit crashes: {round: [peer ids]}"
    )
    rejoin_after: PositiveInt | None = Field(
        None, description="rounds until a crashed peer rejoins (null: never)"
    )

    @property
    def active(self) -> bool:
        """Whether any crash is configured."""
        return self.crash_share > 0 or self.crash_rate > 0 or bool(self.crash_rounds)


class RuntimeConfig(Section):
    """Where and how the peers run."""

    launcher: Literal["auto", "local", "processes", "sim"] = Field(
        "auto",
        description="how the federation runs: 'local' (every peer in one process, real TCP), "
        "'processes' (one OS process per peer), 'sim' (one process, virtual time); 'auto' "
        "follows federate.mode and runtime.processes",
    )
    processes: bool = Field(False, description="one OS process per peer")
    host: str = "127.0.0.1"
    tracker_port: int = Field(0, ge=0, le=65535)
    registration_timeout: Seconds = 120.0
    torch_threads: PositiveInt = 1
    train_workers: int = Field(
        0, ge=0, description="threads training peers in one process; 0 = number of cores"
    )


class Config(Section):
    """The whole configuration."""

    federate: FederateConfig = FederateConfig()
    topology: TopologyConfig = TopologyConfig()
    bittorrent: BitTorrentConfig = BitTorrentConfig()
    chunk: ChunkConfig = ChunkConfig()
    exchange: ExchangeConfig = ExchangeConfig()
    selection: SelectionConfig = SelectionConfig()
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    network: NetworkConfig = NetworkConfig()
    devices: DevicesConfig = DevicesConfig()
    faults: FaultsConfig = FaultsConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    output: OutputConfig = OutputConfig()
    robust: RobustConfig = RobustConfig()
    attack: AttackConfig = AttackConfig()
    security: SecurityConfig = SecurityConfig()

    def _plugin_checks(self) -> None:
        """Refuse settings that a plug-in would silently override."""
        if self.model.options and self.model.factory is None:
            raise _unused("model.options", "they are for model.factory, which is not set")
        if self.data.options and self.data.factory is None:
            raise _unused("data.options", "they are for data.factory, which is not set")
        if self.data.factory is not None and self.data.path is not None:
            raise _unused("data.path", "data.factory replaces it")
        if self.train.step is not None and self.train.proximal_mu > 0:
            raise _unused(
                "train.proximal_mu", "FedProx is part of the built-in step; train.step replaces it"
            )
        if self.train.scaffold and self.train.step is not None:
            raise _unused("train.scaffold", "its correction is part of the built-in step")
        if self.train.scaffold and self.train.optimizer != "sgd":
            raise ConfigError("SCAFFOLD's correction is for SGD", path="train.scaffold")
        rb = self.robust
        if rb.rule_factory is not None and (rb.rule != "mean" or rb.preagg != "none"):
            raise _unused("robust.rule", "robust.rule_factory replaces robust.rule and preagg")

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        # ConfigError (not ValueError) passes through pydantic untouched, with its key path.
        self.data.check()
        if self.model.name == "cnn2d" and self.data.name in ("mnist1d", "synthetic"):
            raise ConfigError(
                "'cnn2d' needs image data (data.name digits, cifar10, emnist, femnist or files)",
                path="model.name",
            )
        n = self.federate.client_num
        for rnd, ids in self.faults.crash_rounds.items():
            bad = [i for i in ids if not 1 <= i <= n]
            if bad or not 1 <= rnd <= self.federate.total_round_num:
                raise ConfigError(
                    f"round {rnd} or peer ids {bad} outside the federation",
                    path="faults.crash_rounds",
                )
        if not self.bittorrent.enable:
            raise ConfigError(
                "false is not supported: the swarm is how fltorrent exchanges updates (no "
                "server or other path exists); to exchange with overlay neighbours only, use "
                "exchange.plan: neighbours",
                path="bittorrent.enable",
            )
        self._plugin_checks()
        self.robust.check(n)
        self.attack.check(n)
        self.selection.check(n)
        if self.runtime.processes and self.federate.mode == "sim":
            raise ConfigError("sim mode runs every peer in one process", path="runtime.processes")
        launcher = self.runtime.launcher
        implied = "sim" if self.federate.mode == "sim" else None
        implied = "processes" if self.runtime.processes else implied
        if launcher != "auto" and implied is not None and launcher != implied:
            raise ConfigError(
                f"'{launcher}' contradicts federate.mode or runtime.processes",
                path="runtime.launcher",
            )
        if launcher == "sim":  # the one key wins; the older keys follow it
            self.federate.mode = "sim"
        elif launcher == "processes":
            self.runtime.processes = True
        if "connections" not in self.topology.model_fields_set and self.topology.connections >= n:
            # The default degree adapts to small federations; an explicit one is checked as given.
            self.topology.connections = max(1, n - 1)
        if self.topology.use:
            # Raises ConfigError with the key path for bad or disconnected graphs.
            build_topology(
                self.topology.type,
                self.federate.client_num,
                connections=self.topology.connections,
                branching=self.topology.branching,
                custom_graph=self.topology.custom_graph,
                seed=self.federate.seed,
            )
        return self


def _unused(path: str, why: str) -> ConfigError:
    return ConfigError(f"would be ignored: {why}", path=path)


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """``; did you mean 'timeout'?`` for an unknown key close to a known one of its section."""
    section: Any = Config
    for part in loc[:-1]:
        field = section.model_fields.get(part) if isinstance(part, str) else None
        section = field.annotation if field is not None else None
        if not (isinstance(section, type) and issubclass(section, Section)):
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + _did_you_mean(err["loc"])
        given = err.get("input")
        shown = (
            ""
            if err["type"] in ("extra_forbidden", "missing") or isinstance(given, dict)
            else f" (got {given!r})"
        )
        lines.append(f"{path}: {msg}{shown}" if path else f"{msg}{shown}")
    return "; ".join(lines)


def parse_config(raw: Mapping[str, Any] | None) -> Config:
    """Validate a plain mapping; raises :class:`ConfigError` naming each bad key path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("the configuration must be a mapping of sections")
    try:
        return Config.model_validate(dict(raw))
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None
    except RecursionError:
        raise ConfigError("the configuration is nested too deeply") from None


def _safe_load(text: str, *, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{what} is nested too deeply") from None


def _parse_value(text: str) -> Any:
    try:
        return _safe_load(text, what="the value")
    except ConfigError:
        return text


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML) to a raw mapping."""
    result: dict[str, Any] = {k: v for k, v in raw.items()}
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError("is not a section", path=".".join(parts[: i + 1]))
            else:
                child = dict(child)
            node[part] = child
            node = child
        node[parts[-1]] = _parse_value(text)
    return result


def load_config(path: Path | str | None = None, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML file (or nothing), apply overrides, validate."""
    raw: Any = {}
    if path is not None:
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{p} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start})"
            ) from None
        raw = _safe_load(text, what=str(p))
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p} must hold a mapping of sections, not {type(raw).__name__}")
    return parse_config(apply_overrides(raw, overrides))


def dump_config(config: Config) -> str:
    """The resolved configuration as YAML (paths as strings)."""
    data = config.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)
