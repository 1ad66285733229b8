"""Local training and evaluation, plus a tiny FedAvg smoke run over the chunk codec."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fltorrent.errors import LearnError
from fltorrent.learn import (
    ChunkPlan,
    build_model,
    evaluate,
    load_dataset,
    partition,
    train_local,
)


def _blobs(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two well separated Gaussian blobs in 8 dimensions."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 8, generator=g) + 3.0 * (2 * y[:, None] - 1)
    return x, y


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_training_learns_and_counts_steps() -> None:
    x, y = _blobs()
    model = build_model("mlp", input_shape=(8,), num_classes=2, hidden=8)
    acc_before, loss_before = evaluate(model, x, y)
    result = train_local(model, x, y, epochs=2, batch_size=50, lr=0.05)
    trained_in_train_mode = model.training  # left as training set it
    acc_after, loss_after = evaluate(model, x, y)
    assert trained_in_train_mode and not model.training
    assert result.num_samples == 256 and result.steps == 2 * 6  # ceil(256 / 50) per epoch
    assert result.seconds > 0 and math.isfinite(result.loss)
    assert loss_after < loss_before and acc_after > 0.95 > acc_before


def test_training_is_seeded_and_leaves_global_rng_alone() -> None:
    x, y = _blobs()
    torch.manual_seed(0)
    expected = torch.rand(2)
    states = []
    for seed in (1, 1, 2):
        model = build_model("mlp", input_shape=(8,), num_classes=2, hidden=8)
        torch.manual_seed(0)
        train_local(model, x, y, batch_size=16, seed=seed)
        assert torch.equal(torch.rand(2), expected)  # shuffling used its own generator
        states.append(_state(model))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_adam_and_unknown_optimizer() -> None:
    x, y = _blobs()
    model = build_model("mlp", input_shape=(8,), num_classes=2, hidden=8)
    before = _state(model)
    result = train_local(model, x, y, optimizer="adam", lr=0.01)
    assert result.steps == 8
    assert not torch.equal(before["fc1.weight"], model.state_dict()["fc1.weight"])
    with pytest.raises(LearnError, match="sgd"):
        train_local(model, x, y, optimizer="lbfgs")
    with pytest.raises(LearnError):
        train_local(model, x, y[:-1])


def test_no_samples_does_nothing() -> None:
    model = build_model("cnn2d", input_shape=(1, 8, 8), num_classes=10, hidden=4)
    model.eval()
    before = _state(model)
    result = train_local(model, torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64))
    assert (result.num_samples, result.steps) == (0, 0) and math.isnan(result.loss)
    assert not model.training  # not even switched to train mode
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    acc, loss = evaluate(model, torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.int64))
    assert math.isnan(acc) and math.isnan(loss)


def test_evaluate_matches_hand_computation() -> None:
    model = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3, 2))  # logits = (x0, x1, 0)
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [3.0, 1.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 2, 1, 1])
    acc, loss = evaluate(model, x, y, batch_size=2)  # batches of 2 must add up right
    assert acc == pytest.approx(4 / 5)
    with torch.no_grad():
        expected = float(F.cross_entropy(model(x), y))
    assert loss == pytest.approx(expected, rel=1e-6)


def test_fedavg_smoke_through_chunks() -> None:
    """Two FedAvg rounds of cnn2d on digits, averaging chunk vectors weighted by samples."""
    ds = load_dataset("digits", seed=0)
    x, y = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    xt, yt = torch.from_numpy(ds.x_test), torch.from_numpy(ds.y_test)
    parts = [torch.from_numpy(p) for p in partition(ds.y_train, 4, alpha=0.5, seed=0)]
    model = build_model("cnn2d", input_shape=ds.input_shape, num_classes=10, hidden=8)
    plan = ChunkPlan.from_state_dict(model.state_dict(), num_chunks=6)
    start_acc, _ = evaluate(model, xt, yt)
    for rnd in range(2):
        global_vectors = plan.state_to_vectors(model.state_dict())
        sums = [np.zeros_like(v) for v in global_vectors]
        total = 0
        for k, idx in enumerate(parts):
            client = build_model("cnn2d", input_shape=ds.input_shape, num_classes=10, hidden=8)
            client.load_state_dict(plan.vectors_to_state(global_vectors))
            result = train_local(client, x[idx], y[idx], seed=10 * rnd + k)
            for i, data in enumerate(plan.split(client.state_dict())):
                sums[i] += result.num_samples * plan.chunk_to_vector(i, data)
            total += result.num_samples
        model.load_state_dict(plan.vectors_to_state([s / total for s in sums]))
    acc, _ = evaluate(model, xt, yt)
    assert int(model.state_dict()["bn1.num_batches_tracked"]) > 0
    assert acc > 0.6 > start_acc


def test_functional_sgd_matches_torch_optim_sgd() -> None:
    # train_local uses torch's functional SGD (to skip the optimizer class's costly first
    # construction); it must give exactly what torch.optim.SGD gives.
    import torch.nn.functional as F

    from fltorrent.learn.models import build_model
    from fltorrent.learn.train import train_local

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 40, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    ours = build_model("cnn1d", input_shape=(40,), num_classes=10, seed=1)
    ref = build_model("cnn1d", input_shape=(40,), num_classes=10, seed=1)
    train_local(
        ours, x, y, epochs=2, batch_size=16, lr=0.05, momentum=0.9, weight_decay=1e-4, seed=5
    )
    opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    order_gen = torch.Generator().manual_seed(5)
    ref.train()
    for _ in range(2):
        order = torch.randperm(64, generator=order_gen)
        for first in range(0, 64, 16):
            idx = order[first : first + 16]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(ref(x[idx]), y[idx]).backward()
            opt.step()
    for (name, a), b in zip(ours.state_dict().items(), ref.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def _distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float(((a[k] - b[k]) ** 2).sum()) for k in a))


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_fedprox_keeps_the_model_near_the_round_start(optimizer: str) -> None:
    x, y = _blobs()
    moved = {}
    for mu in (0.0, 1.0, 10.0):
        model = build_model("mlp", input_shape=(8,), num_classes=2, hidden=16, seed=0)
        start = _state(model)
        train_local(model, x, y, epochs=3, lr=0.05, optimizer=optimizer, proximal_mu=mu, seed=1)
        moved[mu] = _distance(_state(model), start)
    assert moved[0.0] > moved[1.0] > moved[10.0] > 0
    with pytest.raises(LearnError, match="proximal_mu"):
        train_local(model, x, y, proximal_mu=-1.0)


def test_fedprox_adds_mu_times_the_drift_to_each_gradient() -> None:
    # Full-batch plain SGD, three steps, against the same steps written out by hand.
    x, y = _blobs(n=16)
    lr, mu = 0.1, 0.5
    model = build_model("mlp", input_shape=(8,), num_classes=2, hidden=4, seed=0)
    by_hand = build_model("mlp", input_shape=(8,), num_classes=2, hidden=4, seed=0)
    train_local(model, x, y, epochs=3, batch_size=16, lr=lr, momentum=0.0, proximal_mu=mu)
    start = [p.detach().clone() for p in by_hand.parameters()]
    for _ in range(3):
        by_hand.zero_grad()
        F.cross_entropy(by_hand(x), y).backward()
        with torch.no_grad():
            for p, p0 in zip(by_hand.parameters(), start, strict=True):
                assert p.grad is not None
                p.sub_(lr * (p.grad + mu * (p - p0)))
    for k, v in _state(by_hand).items():
        torch.testing.assert_close(_state(model)[k], v, rtol=1e-5, atol=1e-6)
