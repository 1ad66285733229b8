"""Device selection (train.device) and sharing one GPU among the peers of a process."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from fltorrent.config import load_config
from fltorrent.errors import LearnError
from fltorrent.learn.accel import GpuShares, select_device
from fltorrent.learn.importance import ImportanceScorer
from fltorrent.learn.learner import Learner
from fltorrent.learn.models import build_model
from fltorrent.runtime.learning import build_learner, load_federation_data

NO_CUDA = not torch.cuda.is_available()


def test_cpu_and_auto() -> None:
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a host without CUDA")
def test_cuda_without_a_gpu_is_refused() -> None:
    for spec in ("cuda", "cuda:0", "cuda:3"):
        with pytest.raises(LearnError, match="no CUDA device"):
            select_device(spec)


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "mps", "CPU", ""])
def test_bad_names(spec: str) -> None:
    with pytest.raises(LearnError, match="auto, cpu, cuda or cuda:N"):
        select_device(spec)


def test_shares_up_to_one_hold_together() -> None:
    shares = GpuShares()
    gpu = torch.device("cuda:0")
    with shares.hold(gpu, 0.5, timeout=1), shares.hold(gpu, 0.5, timeout=1):
        assert shares.used(gpu) == pytest.approx(1.0)
        # Another device is not counted with this one.
        with shares.hold(torch.device("cuda:1"), 1.0, timeout=1):
            pass
    assert shares.used(gpu) == 0.0


def test_a_full_gpu_makes_the_next_peer_wait_until_a_share_is_free() -> None:
    shares = GpuShares()
    gpu = torch.device("cuda:0")
    order: list[str] = []

    def second() -> None:
        with shares.hold(gpu, 0.6, timeout=10):
            order.append("second in")

    with shares.hold(gpu, 0.6, timeout=1):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.2)
        order.append("first out")  # the second peer is still waiting here
    t.join(5)
    assert order == ["first out", "second in"]
    assert shares.used(gpu) == 0.0


def test_the_wait_has_a_deadline() -> None:
    shares = GpuShares()
    gpu = torch.device("cuda:0")
    with shares.hold(gpu, 1.0, timeout=1):
        start = time.monotonic()
        with pytest.raises(LearnError, match="waited"), shares.hold(gpu, 0.1, timeout=0.2):
            pass
        assert time.monotonic() - start < 2
    with pytest.raises(LearnError, match="positive"), shares.hold(gpu, 0.0, timeout=1):
        pass


def _learner(device: torch.device) -> Learner:
    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    model = build_model("mlp", input_shape=(8,), num_classes=3, hidden=8, seed=0)
    return Learner(
        model=model,
        train_data=(x, y),
        test_data=(x, y),
        local_test_data=(x, y),
        plan_size={"num_chunks": 2},
        train_options={"epochs": 1, "batch_size": 16, "lr": 0.1},
        scorer=ImportanceScorer("magnitude"),
        device=device,
    )


@pytest.mark.skipif(NO_CUDA, reason="needs a CUDA device; this host has none")
def test_training_on_a_gpu_leaves_the_model_on_the_cpu_and_matches_it() -> None:
    on_gpu, on_cpu = _learner(torch.device("cuda")), _learner(torch.device("cpu"))
    a, b = on_gpu.local_round(1), on_cpu.local_round(1)
    assert all(p.device.type == "cpu" for p in on_gpu.model.parameters())
    for u, v in zip(a.vectors, b.vectors, strict=True):
        assert u == pytest.approx(v, abs=1e-4)
    assert on_gpu.evaluate().accuracy == pytest.approx(on_cpu.evaluate().accuracy, abs=0.02)


@pytest.mark.skipif(not NO_CUDA, reason="checks the refusal on a host without CUDA")
def test_a_peer_device_replaces_the_config_and_no_gpu_share_means_the_cpu() -> None:
    config = load_config(None, ["train.device=cuda", "data.num_samples=200"])
    data = load_federation_data(config)
    with pytest.raises(LearnError, match=r"train\.device is 'cuda'"):
        build_learner(config, 1, data)
    assert build_learner(config, 1, data, device="cpu").device == torch.device("cpu")
    # A device profile without a GPU (gpu_share 0) trains on the CPU whatever the setting.
    assert build_learner(config, 1, data, gpu_share=0.0).device == torch.device("cpu")
