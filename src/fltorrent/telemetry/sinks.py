"""Where a run's round records go besides ``metrics.jsonl``: TensorBoard and MLflow, when
installed, behind the interface of the JSON-lines sink (``emit`` one record, ``close``).

``output.sinks`` names them. TensorBoard (``torch.utils.tensorboard``, needs the
``tensorboard`` package) writes event files to ``RUN_DIR/tensorboard`` (``tensorboard --logdir
RUN_DIR/tensorboard``); MLflow (``mlflow`` or ``mlflow-skinny``) logs to a local file store,
``RUN_DIR/mlruns`` (``mlflow ui --backend-store-uri RUN_DIR/mlruns``). Each plots, per peer,
accuracy, loss, completion, bytes and times against the round.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from fltorrent.errors import ConfigError
from fltorrent.telemetry.events import RoundMetrics

SINKS = ("tensorboard", "mlflow")
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
# What each record contributes, per peer, against the round.
SCALARS = (
    "accuracy",
    "loss",
    "local_accuracy",
    "train_loss",
    "completion",
    "bytes_up",
    "bytes_down",
    "duplicate_bytes",
    "train_s",
    "exchange_s",
)


class MetricsSink(Protocol):
    """Receives every round record of a run, in the order they are made."""

    def emit(self, event: RoundMetrics) -> None: ...

    def close(self) -> None: ...


def _scalars(m: RoundMetrics) -> dict[str, float]:
    values = {k: getattr(m, k) for k in SCALARS}
    return {k: float(v) for k, v in values.items() if v is not None and math.isfinite(float(v))}


class TensorBoardSink:
    """Event files for TensorBoard: ``<scalar>/peer-<id>`` against the round."""

    def __init__(self, directory: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415 (optional)

        self.directory = directory
        self._writer: Any = SummaryWriter(log_dir=str(directory))

    def emit(self, event: RoundMetrics) -> None:
        for name, value in _scalars(event).items():
            self._writer.add_scalar(f"{name}/peer-{event.peer}", value, event.round)

    def close(self) -> None:
        self._writer.close()


class MlflowSink:
    """One MLflow run in a local store: ``peer-<id>.<scalar>`` against the round."""

    def __init__(self, directory: Path, run_name: str, params: dict[str, Any]) -> None:
        import mlflow  # noqa: PLC0415 (optional)

        # A local file store: no server and no database (MLflow 3 keeps it in maintenance mode
        # and asks for this opt-in; mlflow-skinny has no SQLite store).
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        directory.mkdir(parents=True, exist_ok=True)
        self._client: Any = mlflow.MlflowClient(tracking_uri=directory.resolve().as_uri())
        experiment = self._client.get_experiment_by_name("fltorrent")
        exp_id = (
            experiment.experiment_id
            if experiment is not None
            else self._client.create_experiment("fltorrent")
        )
        self._run = self._client.create_run(exp_id, run_name=run_name)
        for key, value in params.items():
            self._client.log_param(self._run.info.run_id, key, value)

    def emit(self, event: RoundMetrics) -> None:
        run_id = self._run.info.run_id
        for name, value in _scalars(event).items():
            self._client.log_metric(run_id, f"peer-{event.peer}.{name}", value, step=event.round)

    def close(self) -> None:
        self._client.set_terminated(self._run.info.run_id)


def check_sinks(names: Sequence[str]) -> None:
    """Refuse a sink whose package is not installed (before a run starts)."""
    for name in names:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(
                f"{name} needs the {PACKAGES[name]} package: pip install 'fltorrent[{name}]'",
                path="output.sinks",
            )


def open_sinks(
    names: Sequence[str], out: Path, *, run_name: str, params: dict[str, Any]
) -> list[MetricsSink]:
    """The sinks ``names`` asks for, writing under ``out``."""
    check_sinks(names)
    sinks: list[MetricsSink] = []
    for name in names:
        try:
            if name == "tensorboard":
                sinks.append(TensorBoardSink(out / "tensorboard"))
            else:
                sinks.append(MlflowSink(out / "mlruns", run_name, params))
        except Exception as exc:  # the library's own errors, whatever their type
            FanOut(sinks).close()
            raise ConfigError(f"{name}: {type(exc).__name__}: {exc}", path="output.sinks") from None
    return sinks


class FanOut:
    """Several sinks as one."""

    def __init__(self, sinks: Sequence[MetricsSink]) -> None:
        self.sinks = list(sinks)
        self.closed = False

    def emit(self, event: RoundMetrics) -> None:
        for sink in self.sinks:
            sink.emit(event)

    def close(self) -> None:
        """Close every sink (once)."""
        if not self.closed:
            self.closed = True
            for sink in self.sinks:
                sink.close()
