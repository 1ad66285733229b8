"""fltorrent's default federation is FedAvg: on the CIFAR-10 benchmark's setup (a user's
ResNet through model.factory, BatchNorm included), all-to-all with complete delivery ends with
the model of the textbook FedAvg loop in plain PyTorch, given the same batch order."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from fltorrent.learn.standins import write_cifar10
from fltorrent.runtime.federation import Federation
from fltorrent.runtime.learning import load_federation_data
from tests.benchmark_scripts import load_benchmark


def test_the_federation_ends_with_the_textbook_fedavg_model(tmp_path: Path) -> None:
    bench = load_benchmark("cifar")
    write_cifar10(tmp_path / "cifar", train=300, test=60, seed=0)
    ns = bench.arguments(["--peers", "3", "--rounds", "2", "--samples", "360", "--width", "4"])
    config = bench.bench_config(tmp_path / "cifar", ns, "output.save_model=true")
    result = Federation(config, output_dir=tmp_path / "run").run()
    assert result.summary["finished_peers"] == [1, 2, 3]
    data = load_federation_data(config)
    assert data is not None
    curve, plain = bench.plain_fedavg(config, data)
    saved = load_file(str(tmp_path / "run" / "model.safetensors"))
    compared = 0
    for name, value in plain.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(saved[name].float(), value, atol=1e-5), name
            compared += 1
    assert compared == len([v for v in plain.state_dict().values() if v.is_floating_point()])
    accuracy = [r["mean"] for r in result.summary["accuracy_per_round"]]
    assert accuracy == curve
