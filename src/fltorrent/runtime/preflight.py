"""Checks before a run: what can be known before it starts fails before anything is written.

A run that cannot work (more peers than samples, a port in use, a host this machine cannot
listen on, a model too large for this host's memory, an output directory that is a file,
read-only or full) is refused with one :class:`~fltorrent.errors.ConfigError` naming what was
wrong, before ``config.yaml`` or any other output exists. ``fltorrent run`` calls
:func:`preflight`; ``fltorrent tracker`` and ``fltorrent peer`` call the parts that apply to
them (:func:`check_listen`, :func:`prepare_output`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
from pathlib import Path

import psutil
import torch

from fltorrent.config import Config
from fltorrent.errors import ConfigError, LearnError
from fltorrent.learn.models import build_model
from fltorrent.runtime.build import check_plugins
from fltorrent.runtime.launcher import launcher_name
from fltorrent.runtime.learning import FederationData, check_local, load_federation_data
from fltorrent.telemetry.sinks import check_sinks

# Copies of the model a training peer holds at least: its weights, their gradients and the
# round-start weights its update is taken against (optimizer state and received updates come
# on top): the bound below which a run cannot fit, not an estimate of what it uses.
MIN_MODEL_COPIES = 3
MIN_FREE_DISK = 1 << 20  # metrics, summary and logs of a small run
_GB = 1e9


def preflight(config: Config, output_dir: Path) -> FederationData | None:
    """Everything ``fltorrent run`` can check before it starts; returns the federation's data
    split (``None`` when each peer loads its own), which the in-process launchers reuse."""
    check_plugins(config)
    check_local(config)
    check_sinks(config.output.sinks)
    try:
        data = load_federation_data(config)
    except LearnError as exc:
        raise ConfigError(str(exc), path="data") from None
    model_bytes = check_memory(config, data)
    if launcher_name(config) != "sim":
        check_listen(
            config.runtime.host,
            config.runtime.tracker_port,
            host_key="runtime.host",
            port_key="runtime.tracker_port",
        )
    models = model_bytes * (config.federate.client_num + 1) if config.output.save_model else 0
    prepare_output(output_dir, need_bytes=MIN_FREE_DISK + models)
    return data


def model_size(config: Config, data: FederationData | None) -> int | None:
    """Parameters and buffers of the built-in model (counted on the meta device: nothing is
    allocated); ``None`` for a user's model or when the input shape is each peer's own."""
    if config.model.factory is not None or data is None:
        return None
    m = config.model
    with torch.device("meta"):
        model = build_model(
            m.name,
            input_shape=data.dataset.input_shape,
            num_classes=data.dataset.num_classes,
            hidden=m.hidden,
            seed=config.federate.seed,
        )
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def check_memory(config: Config, data: FederationData | None) -> int:
    """Refuse a model whose copies cannot fit in this host's available memory; returns the
    model's size in bytes (0 when unknown)."""
    size = model_size(config, data)
    if size is None:
        return 0
    peers = config.federate.client_num  # every launcher runs all peers on this host
    need = size * MIN_MODEL_COPIES * peers
    available = psutil.virtual_memory().available
    if need > available:
        raise ConfigError(
            f"the {config.model.name} model is {size / _GB:.2f} GB; {peers} peers on this host "
            f"need at least {need / _GB:.2f} GB, {available / _GB:.2f} GB is available",
            path="model.hidden",
        )
    return size


def check_listen(host: str, port: int, *, host_key: str, port_key: str) -> None:
    """Refuse a host this machine cannot listen on and a port that is in use."""
    if not host.strip():
        raise ConfigError("an empty host; give an address (0.0.0.0: every one)", path=host_key)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc}", path=host_key) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers do
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is in use", path=port_key) from None
            raise ConfigError(
                f"this host cannot listen on {host!r}: {exc.strerror}", path=host_key
            ) from None


def prepare_output(path: Path, *, need_bytes: int = MIN_FREE_DISK) -> None:
    """Create the output directory and prove it writable with ``need_bytes`` free; a check
    that fails leaves no directory behind that it created."""
    if not str(path).strip():
        raise ConfigError("the output directory is an empty path")
    where = f"output directory {path}"
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{where}: is a file, not a directory")
    first_new = next((p for p in reversed((path, *path.parents)) if not p.exists()), None)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot create it: {exc.strerror}") from None
    try:
        _probe(path, where, need_bytes)
    except ConfigError:
        if first_new is not None:
            shutil.rmtree(first_new, ignore_errors=True)
        raise


def _probe(path: Path, where: str, need_bytes: int) -> None:
    probe = path / f".write-test-{os.getpid()}"
    try:
        with probe.open("wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise ConfigError(f"{where}: cannot write to it: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    free = shutil.disk_usage(path).free
    if free < need_bytes:
        raise ConfigError(
            f"{where}: {free / 1e6:.1f} MB free, this run writes about {need_bytes / 1e6:.1f} MB"
        )
