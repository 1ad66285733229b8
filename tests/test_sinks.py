"""TensorBoard and MLflow sinks: what a run's records look like to those tools, read back with
their own readers; and a missing package is a configuration error."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fltorrent.errors import ConfigError
from fltorrent.telemetry.events import RoundMetrics
from fltorrent.telemetry.sinks import FanOut, check_sinks, open_sinks
from tests.records import round_metrics


def _metrics(round_: int, peer: int) -> RoundMetrics:
    return round_metrics(
        round_, peer, accuracy=0.1 * round_ + 0.01 * peer, loss=float("nan"), train_loss=None
    )


def test_tensorboard_and_mlflow_get_every_peers_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    sinks = FanOut(open_sinks(["tensorboard", "mlflow"], tmp_path, run_name="t", params={"a": 1}))
    for r in (1, 2, 3):
        for p in (1, 2):
            sinks.emit(_metrics(r, p))
    sinks.close()
    sinks.close()  # once is enough; twice does no harm

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "accuracy/peer-2" in tags and "loss/peer-1" not in tags  # NaN is left out
    got = [(e.step, round(e.value, 6)) for e in events.Scalars("accuracy/peer-2")]
    assert got == [(1, 0.12), (2, 0.22), (3, 0.32)]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=(tmp_path / "mlruns").resolve().as_uri())
    experiment = client.get_experiment_by_name("fltorrent")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(run.info.run_id, "peer-1.accuracy")
    assert [(m.step, round(m.value, 6)) for m in history] == [(1, 0.11), (2, 0.21), (3, 0.31)]
    assert run.data.params == {"a": "1"}


def test_a_sink_without_its_package_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"output\.sinks: mlflow needs the mlflow package"):
        check_sinks(["mlflow"])
