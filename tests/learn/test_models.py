"""Model zoo: architectures, seeded initialisation and shape checks."""

from __future__ import annotations

import pytest
import torch

from fltorrent.errors import LearnError
from fltorrent.learn import MODEL_NAMES, build_model

SHAPES = {"mlp": (40,), "cnn1d": (40,), "cnn2d": (1, 8, 8)}


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_shape_and_seeded_init(name: str) -> None:
    shape = SHAPES[name]
    model = build_model(name, input_shape=shape, num_classes=10, seed=3)
    same = build_model(name, input_shape=shape, num_classes=10, seed=3)
    other = build_model(name, input_shape=shape, num_classes=10, seed=4)
    a, b, c = model.state_dict(), same.state_dict(), other.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert model(torch.randn(5, *shape)).shape == (5, 10)


def test_build_model_leaves_global_rng_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    build_model("cnn1d", input_shape=(40,), num_classes=10, seed=9)
    assert torch.equal(torch.rand(3), expected)


def test_cnn1d_architecture() -> None:
    model = build_model("cnn1d", input_shape=(40,), num_classes=10)
    assert [name for name, _ in model.named_children()] == ["conv1", "conv2", "conv3", "fc"]
    assert _num_params(model) == 8010  # 192 + 3104 + 3104 + 1610
    assert model.state_dict()["fc.weight"].shape == (10, 32 * 5)
    # Multi-channel input (C, L) is accepted as well.
    two = build_model("cnn1d", input_shape=(2, 64), num_classes=3, hidden=8)
    assert two(torch.randn(4, 2, 64)).shape == (4, 3)
    assert two.state_dict()["conv1.weight"].shape == (8, 2, 5)


def test_cnn2d_has_batchnorm_buffers() -> None:
    state = build_model("cnn2d", input_shape=(1, 8, 8), num_classes=10).state_dict()
    assert state["bn1.running_mean"].shape == (32,)
    assert state["bn2.running_var"].dtype == torch.float32
    assert state["bn1.num_batches_tracked"].dtype == torch.int64
    assert state["bn1.num_batches_tracked"].dim() == 0
    assert state["fc.weight"].shape == (10, 32 * 4 * 4)


def test_mlp_takes_any_shape() -> None:
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=4, hidden=8)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    assert model.state_dict()["fc1.weight"].shape == (32, 64)


def test_bad_requests_raise_learn_error() -> None:
    with pytest.raises(LearnError, match="mlp"):
        build_model("resnet", input_shape=(40,), num_classes=10)
    with pytest.raises(LearnError, match="cnn2d"):
        build_model("cnn2d", input_shape=(40,), num_classes=10)
    with pytest.raises(LearnError, match="cnn1d"):
        build_model("cnn1d", input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(LearnError, match="L >= 8"):
        build_model("cnn1d", input_shape=(4,), num_classes=10)
    with pytest.raises(LearnError):
        build_model("mlp", input_shape=(0,), num_classes=10)


def test_concurrent_builds_in_threads_give_identical_weights() -> None:
    # Peers of one process build their models in worker threads at the same time; they must
    # all start from the same weights or federated averaging averages noise.
    from concurrent.futures import ThreadPoolExecutor

    def build(_: int) -> dict[str, torch.Tensor]:
        return build_model("cnn1d", input_shape=(40,), num_classes=10, seed=3).state_dict()

    with ThreadPoolExecutor(max_workers=8) as pool:
        states = list(pool.map(build, range(32)))
    for state in states[1:]:
        for key, value in state.items():
            assert torch.equal(value, states[0][key]), key
