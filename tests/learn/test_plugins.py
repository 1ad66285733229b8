"""The user's own model, plugged in by import string (``model.factory``)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from fltorrent.config import load_config
from fltorrent.defense import Defense
from fltorrent.errors import ConfigError, FederationError, PluginError
from fltorrent.learn.plugins import resolve, user_data, user_evaluate, user_model, user_rule
from fltorrent.runtime.federation import Federation
from tests.learn import user_models

MLP = "tests.learn.user_models:make_mlp"
SMALL = [
    "federate.mode=sim",
    "federate.client_num=4",
    "federate.total_round_num=2",
    "data.num_samples=2000",
    "output.progress=none",
]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.learn.no_such_module:make", "cannot import 'tests.learn.no_such_module'"),
        ("tests.learn.user_models:missing", "has no 'missing'"),
        ("tests.learn.user_models:NOT_CALLABLE", "is not callable"),
        ("not an import string", "is not an import string"),
    ],
)
def test_what_does_not_resolve_is_a_config_error_naming_the_key(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        resolve(spec, key="model.factory")
    assert caught.value.path == "model.factory"


def test_the_factory_gets_its_options_and_the_federations_seed() -> None:
    a = user_model(MLP, {"hidden": 8}, seed=3, who="peer 1")
    b = user_model(MLP, {"hidden": 8}, seed=3, who="peer 2")
    c = user_model(MLP, {"hidden": 8}, seed=4, who="peer 3")
    assert a.state_dict()["1.weight"].shape == (8, 40)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])  # every peer starts from the same weights
    assert not torch.equal(a.state_dict()["1.weight"], c.state_dict()["1.weight"])


def test_errors_in_user_code_carry_the_users_traceback_and_the_peer() -> None:
    with pytest.raises(PluginError) as caught:
        user_model("tests.learn.user_models:broken", {"hidden": 8}, seed=0, who="peer 3")
    text = str(caught.value)
    assert text.startswith("peer 3: model.factory 'tests.learn.user_models:broken' raised")
    assert "the user's bug" in text and "_deep_inside" in text  # the user's own frames
    with pytest.raises(PluginError, match=r"returned a int, not an nn\.Module"):
        user_model("tests.learn.user_models:not_a_model", {}, seed=0, who="peer 1")


@pytest.mark.slow
def test_a_federation_trains_the_users_model(tmp_path: Path) -> None:
    config = load_config(None, [*SMALL, f"model.factory={MLP}", "model.options={hidden: 12}"])
    result = Federation(config, output_dir=tmp_path).run()
    assert result.summary["finished_peers"] == [1, 2, 3, 4]
    assert all(r["completion"] == 1.0 for r in result.metrics)
    saved = load_file(str(tmp_path / "model.safetensors"))
    assert set(saved) == {"1.weight", "1.bias", "3.weight", "3.bias"}
    assert saved["1.weight"].shape == (12, 40)
    assert result.summary["final_accuracy_mean"] > 0.2  # learning, not chance (0.1)


def test_a_bad_import_string_stops_the_run_before_anything_is_written(tmp_path: Path) -> None:
    config = load_config(None, [*SMALL, "model.factory=tests.learn.nowhere:make"])
    with pytest.raises(ConfigError, match=r"model\.factory"):
        Federation(config, output_dir=tmp_path / "out").run()
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_failing_factory_ends_the_run_with_the_users_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(None, [*SMALL, "model.factory=tests.learn.user_models:broken"])
    with caplog.at_level(logging.ERROR), pytest.raises(FederationError, match="no peer finished"):
        Federation(config, output_dir=tmp_path).run()
    failures = [r.getMessage() for r in caplog.records if "the user's bug" in r.getMessage()]
    assert len(failures) == 4 and all("_deep_inside" in f for f in failures)


@pytest.mark.slow
def test_the_users_model_runs_in_peer_processes(tmp_path: Path) -> None:
    # Import strings reach other processes through the configuration, as they reach other
    # hosts through the tracker's welcome.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fltorrent",
            "run",
            "--processes",
            "--peers",
            "3",
            "--rounds",
            "1",
            "--set",
            "data.num_samples=2000",
            "--set",
            f"model.factory={MLP}",
            "--progress",
            "none",
            "--output-dir",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    assert set(saved) == {"1.weight", "1.bias", "3.weight", "3.bias"}


BLOBS = "tests.learn.user_models:blobs"


def test_a_peers_own_data_becomes_tensors() -> None:
    own = user_data(BLOBS, {"samples": 30}, peer=2, num_peers=3, seed=1, who="peer 2")
    assert own.train[0].shape == (30, 40) and own.train[0].dtype == torch.float32
    assert own.train[1].dtype == torch.long and own.test[0].shape == (100, 40)
    assert own.classes == 4
    other = user_data(BLOBS, {"samples": 30}, peer=3, num_peers=3, seed=1, who="peer 3")
    assert not torch.equal(own.train[0], other.train[0])  # each peer's own


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("tests.learn.user_models:not_a_pair", r"must return \(train, test\)"),
        ("tests.learn.user_models:ragged", "item 0 is not|inputs differ in shape"),
    ],
)
def test_data_that_is_not_pairs_of_one_shape_is_refused(spec: str, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        user_data(spec, {}, peer=1, num_peers=2, seed=0, who="peer 1")


@pytest.mark.slow
@pytest.mark.parametrize("model", [MLP, None])
def test_a_federation_trains_on_each_peers_own_data(tmp_path: Path, model: str | None) -> None:
    overrides = [*SMALL, f"data.factory={BLOBS}", "data.options={samples: 150}"]
    if model is not None:
        overrides += [f"model.factory={model}", "model.options={classes: 4}"]
    else:
        overrides += ["model.name=mlp"]  # a zoo model: the classes come from the dataset
    result = Federation(load_config(None, overrides), output_dir=tmp_path).run()
    assert result.summary["finished_peers"] == [1, 2, 3, 4]
    assert result.summary["final_accuracy_mean"] > 0.9  # the blobs are well apart


def test_a_users_rule_aggregates_each_chunk() -> None:
    rule = user_rule("tests.learn.user_models:middle_mean", who="peer 1")
    defense = Defense(custom=rule)
    assert not defense.plain
    base = [np.zeros(3)]
    others = {a: (1.0, {0: np.full(3, float(a))}) for a in (2, 3, 4, 50)}
    out, _ = defense.aggregate(1, me=1, base=base, own=[np.ones(3)], own_weight=1.0, others=others)
    np.testing.assert_allclose(out[0], np.full(3, 3.0))  # 1, 2, 3, 4, 50: the middle three
    bad = Defense(custom=user_rule("tests.learn.user_models:wrong_shape", who="peer 1"))
    with pytest.raises(PluginError, match="not a finite vector"):
        bad.aggregate(1, me=1, base=base, own=[np.ones(3)], own_weight=1.0, others=others)
    failing = Defense(custom=user_rule("tests.learn.user_models:failing_rule", who="peer 2"))
    with pytest.raises(PluginError, match=r"peer 2: robust\.rule_factory .* the user's rule broke"):
        failing.aggregate(1, me=1, base=base, own=[np.ones(3)], own_weight=1.0, others=others)


@pytest.mark.slow
def test_a_federation_aggregates_with_the_users_rule(tmp_path: Path) -> None:
    rule = "robust.rule_factory=tests.learn.user_models:middle_mean"
    result = Federation(load_config(None, [*SMALL, rule]), output_dir=tmp_path).run()
    assert result.summary["finished_peers"] == [1, 2, 3, 4]
    assert result.summary["final_accuracy_mean"] > 0.2


@pytest.mark.slow
def test_a_federation_trains_and_evaluates_with_the_users_functions(tmp_path: Path) -> None:
    overrides = [
        *SMALL,
        "train.step=tests.learn.user_models:sgd_step",
        "train.evaluate=tests.learn.user_models:accuracy_only",
        "train.lr=0.3",  # plain SGD without momentum needs a larger step in two rounds
        "train.local_epochs=2",
    ]
    result = Federation(load_config(None, overrides), output_dir=tmp_path).run()
    assert result.summary["finished_peers"] == [1, 2, 3, 4]
    assert all(r["loss"] == -1.0 for r in result.metrics)  # the user's evaluation ran
    assert all(r["train_loss"] > 0 for r in result.metrics)  # the user's step's loss
    assert result.summary["final_accuracy_mean"] > 0.2


def test_a_users_evaluation_must_give_accuracy_and_loss() -> None:
    evaluate = user_evaluate("tests.learn.user_models:not_a_pair_of_floats", who="peer 4")
    with pytest.raises(PluginError, match=r"peer 4: train\.evaluate .* not \(accuracy, loss\)"):
        evaluate(model=torch.nn.Linear(2, 2), x=torch.zeros(1, 2), y=torch.zeros(1))


def test_a_factory_may_build_a_zoo_model_and_numpy_draws_are_seeded() -> None:
    # The lock is reentrant (before, this deadlocked); numpy's generator is seeded as torch's.
    a = user_model("tests.learn.user_models:wrapped_zoo", {}, seed=1, who="peer 1")
    assert sum(p.numel() for p in a.parameters()) > 0
    first = user_model("tests.learn.user_models:numpy_init", {"hidden": 3}, seed=9, who="p 1")
    again = user_model("tests.learn.user_models:numpy_init", {"hidden": 3}, seed=9, who="p 2")
    for k, v in first.state_dict().items():
        assert torch.equal(v, again.state_dict()[k])


def test_labels_the_model_has_no_output_for_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    overrides = [
        *SMALL,
        f"data.factory={BLOBS}",
        f"model.factory={MLP}",
        "model.options={classes: 3}",  # the blobs have four classes
    ]
    with caplog.at_level(logging.WARNING), pytest.raises(FederationError, match="no peer finished"):
        Federation(load_config(None, overrides), output_dir=tmp_path).run()
    assert any("has label 3, the model only 3 classes" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["model.options={hidden: 3}"], "model.options"),
        (["data.options={samples: 3}"], "data.options"),
        (["train.step=a.b:c", "train.proximal_mu=0.1"], "train.proximal_mu"),
        (["robust.rule_factory=a.b:c", "robust.rule=median"], "robust.rule"),
    ],
)
def test_settings_a_plug_in_would_override_are_refused(overrides: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match="would be ignored") as caught:
        load_config(None, overrides)
    assert caught.value.path == key


@pytest.mark.slow
def test_the_users_step_gets_the_model_in_train_mode(tmp_path: Path) -> None:
    from tests.learn import user_models

    user_models.MODES.clear()
    overrides = [
        *SMALL,
        "federate.total_round_num=3",
        "train.step=tests.learn.user_models:mode_spy",
    ]
    Federation(load_config(None, overrides), output_dir=tmp_path).run()
    assert len(user_models.MODES) == 12 and all(user_models.MODES)


def test_plugins_as_python_objects(tmp_path: Path) -> None:
    """Federation(model=..., data=...): a module-level function goes by its import string (it
    reaches peer processes); a lambda or a local function is registered in this process."""
    calls: list[int] = []

    def data(*, peer: int, num_peers: int, seed: int) -> tuple[object, object]:
        calls.append(peer)
        return user_models.blobs(peer=peer, num_peers=num_peers, seed=seed, samples=60)

    fed = Federation(
        load_config(None, SMALL), output_dir=tmp_path, model=user_models.make_mlp, data=data
    )
    assert fed.config.model.factory == MLP
    assert fed.config.data.factory is not None
    assert fed.config.data.factory.startswith("fltorrent.learn.plugins:REGISTERED.")
    result = fed.run()
    assert sorted(calls) == [1, 2, 3, 4]  # every peer called the local function
    assert result.summary["finished_peers"] == [1, 2, 3, 4]
    with pytest.raises(ConfigError, match="cannot reach peer processes"):
        Federation(
            load_config(None, ["federate.client_num=2", "runtime.processes=true"]),
            output_dir=tmp_path / "p",
            model=lambda: user_models.make_mlp(hidden=4),
        )
    with pytest.raises(ConfigError, match=r"robust\.rule"):  # a clash, refused as in a file
        Federation(load_config(None, [*SMALL, "robust.rule=median"]), rule=user_models.middle_mean)
