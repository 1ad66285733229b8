"""SCAFFOLD without a server: the control variates' arithmetic, and a federation that follows
the textbook algorithm (one server, option II) step for step when it can."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F

from fltorrent.aggregate.scaffold import drift_gradient, local_control, mean_steps
from fltorrent.config import load_config
from fltorrent.errors import AggregationError, ConfigError
from fltorrent.learn.models import build_model
from fltorrent.runtime.federation import Federation
from fltorrent.stages import Scaffold

MASK = [np.array([True, True, False])]


def test_drift_is_the_mean_gradient_of_the_steps() -> None:
    start, end = [np.array([1.0, 2.0, 7.0])], [np.array([0.5, 3.0, 9.0])]
    (d,) = drift_gradient(start, end, steps=5, lr=0.1, mask=MASK)
    assert d.tolist() == pytest.approx([1.0, -2.0, 0.0])  # the step counter is left out
    with pytest.raises(AggregationError, match="steps > 0"):
        drift_gradient(start, end, steps=0, lr=0.1, mask=MASK)


def test_option_two_and_the_weighted_step_count() -> None:
    (c,) = local_control([np.array([1.0])], [np.array([0.25])], [np.array([2.0])])
    assert c.tolist() == [2.75]  # c_i - c + drift
    (first,) = local_control(None, None, [np.array([2.0])])
    assert first.tolist() == [2.0]
    # K_j = ceil(n_j / 32): 4 and 1 steps, weighted by 100 and 20 samples.
    assert mean_steps([100, 20], epochs=1, batch_size=32) == pytest.approx((400 + 20) / 120)
    assert mean_steps([64, 64], epochs=3, batch_size=32) == 6.0


def test_the_stage_keeps_both_variates() -> None:
    stage = Scaffold(lr=0.1, epochs=1, batch_size=10)
    assert stage.correction() is None
    mask = [np.array([True])]
    stage.trained([np.array([1.0])], [np.array([0.8])], 2, mask)  # c_i = 0.2 / 0.2 = 1
    (corr,) = stage.correction() or []
    assert corr.tolist() == pytest.approx([-1.0])
    # Authors of 20 and 20 samples: K = 2; the aggregate moved 0.4: c = 0.4 / 0.2 = 2.
    stage.aggregated([np.array([1.0])], [np.array([0.6])], [20.0, 20.0], mask)
    (corr,) = stage.correction() or []
    assert corr.tolist() == pytest.approx([1.0])


def test_scaffold_is_for_the_built_in_sgd_step() -> None:
    with pytest.raises(ConfigError, match="for SGD"):
        load_config(None, ["train.scaffold=true", "train.optimizer=adam"])
    with pytest.raises(ConfigError, match="built-in step"):
        load_config(None, ["train.scaffold=true", "train.step=tests.learn.user_models:sgd_step"])


PEERS, ROUNDS, SAMPLES, LR = 3, 3, 40, 0.1


def _data(peer: int) -> tuple[np.ndarray, np.ndarray]:
    """Each peer's own task, skewed: its labels lean to its own class."""
    rng = np.random.default_rng(peer)
    x = rng.normal(size=(SAMPLES, 6)).astype(np.float32)
    y = (x @ np.random.default_rng(9).normal(size=(6, 3))).argmax(1)
    y[: SAMPLES // 2] = peer % 3
    return x, y


def _textbook(config_seed: int) -> torch.nn.Module:
    """SCAFFOLD as published (option II, every client every round, global step 1), with the
    batch order fltorrent's peer k draws, on the peers' data."""
    model = build_model("mlp", input_shape=(6,), num_classes=3, hidden=8, seed=config_seed)
    params = list(model.parameters())
    c = [torch.zeros_like(p) for p in params]
    c_own = [[torch.zeros_like(p) for p in params] for _ in range(PEERS)]
    for rnd in range(1, ROUNDS + 1):
        start = [p.detach().clone() for p in params]
        ends, new_own = [], []
        for k in range(PEERS):
            local = copy.deepcopy(model)
            lp = list(local.parameters())
            x, y = (torch.from_numpy(a) for a in _data(k + 1))
            gen = torch.Generator().manual_seed((config_seed * 1000 + k + 1) * 100_003 + rnd)
            order, steps = torch.randperm(SAMPLES, generator=gen), 0
            for first in range(0, SAMPLES, 16):
                idx = order[first : first + 16]
                local.zero_grad()
                loss = F.cross_entropy(local(x[idx]), y[idx])
                loss.backward()  # type: ignore[no-untyped-call]
                with torch.no_grad():
                    for p, ci, cg in zip(lp, c_own[k], c, strict=True):
                        assert p.grad is not None
                        p.sub_(LR * (p.grad + cg - ci))
                steps += 1
            ends.append([p.detach().clone() for p in lp])
            new_own.append(
                [
                    ci - cg + (s - e) / (steps * LR)
                    for ci, cg, s, e in zip(c_own[k], c, start, ends[-1], strict=True)
                ]
            )
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(torch.stack([e[i] for e in ends]).mean(0))
        c = [
            cg + sum(n[i] - o[i] for n, o in zip(new_own, c_own, strict=True)) / PEERS
            for i, cg in enumerate(c)
        ]
        c_own = new_own
    return model


@pytest.mark.slow
def test_the_federation_follows_textbook_scaffold(tmp_path: Path) -> None:
    """Equal sample counts, plain SGD, complete delivery: each peer's variate from its own
    aggregate is the server's, and the federation ends with the textbook model."""
    for peer in range(1, PEERS + 1):
        x, y = _data(peer)
        np.savez(tmp_path / f"p{peer}.npz", x_train=x, y_train=y, x_test=x[:8], y_test=y[:8])
    overrides = [
        "federate.mode=sim",
        f"federate.client_num={PEERS}",
        f"federate.total_round_num={ROUNDS}",
        "data.name=files",
        f"data.path={tmp_path}/p{{peer}}.npz",
        "data.num_classes=3",
        "model.name=mlp",
        "model.hidden=8",
        f"train.lr={LR}",
        "train.momentum=0",
        "train.batch_size=16",
        "output.progress=none",
    ]
    with_scaffold = Federation(
        load_config(None, [*overrides, "train.scaffold=true"]), output_dir=tmp_path / "s"
    ).run()
    assert with_scaffold.summary["finished_peers"] == [1, 2, 3]
    saved = load_file(str(tmp_path / "s" / "model.safetensors"))
    textbook = _textbook(config_seed=0)
    for name, value in textbook.state_dict().items():
        assert torch.allclose(saved[name], value, atol=1e-5), name
    # And the correction did something: plain FedAvg ends elsewhere.
    Federation(load_config(None, overrides), output_dir=tmp_path / "f").run()
    plain = load_file(str(tmp_path / "f" / "model.safetensors"))
    assert not all(torch.allclose(plain[n], v, atol=1e-3) for n, v in saved.items())
