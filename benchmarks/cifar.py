"""A user's ResNet-style model on CIFAR-10: fltorrent against a plain PyTorch FedAvg loop.

Both train the same model (``benchmarks/user_resnet.py``, given to fltorrent as
``model.factory``, so through the plug-in path) from the same initial weights, with the same
local training settings (SGD with momentum, epochs, batch size), on the same split of the same
data among ``--peers`` peers. fltorrent runs the default all-to-all exchange in simulation
(``federate.mode: sim``: the swarm protocol in full, time simulated); the baseline is the
textbook loop: each client trains a copy of the global model, the server averages the copies'
states weighted by sample counts (McMahan et al. 2017). Reported: test accuracy after each
round (fltorrent: the mean over peers), the final gap, and wall time.

The data is a real CIFAR-10 copy when ``--cifar-root`` holds one (torchvision's
``cifar-10-batches-py`` or the binary batches), else a generated stand-in in the same format
(``fltorrent.learn.standins``; its accuracy says nothing about real CIFAR-10's).

    python benchmarks/cifar.py --json bench-results/cifar.json
    python benchmarks/cifar.py --cifar-root ~/data --samples 60000 --rounds 30
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))  # where the user's model module lives

from fltorrent.config import Config, load_config  # noqa: E402
from fltorrent.learn.models import seeded  # noqa: E402
from fltorrent.learn.plugins import resolve  # noqa: E402
from fltorrent.learn.standins import write_cifar10  # noqa: E402
from fltorrent.runtime.federation import Federation  # noqa: E402
from fltorrent.runtime.learning import FederationData, load_federation_data  # noqa: E402

FACTORY = "user_resnet:make_resnet"


def fltorrent_curve(config: Config) -> list[float]:
    """Mean test accuracy over peers after each round."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Federation(config, output_dir=Path(tmp)).run()
    return [float(r["mean"]) for r in result.summary["accuracy_per_round"]]


def plain_fedavg(config: Config, data: FederationData) -> tuple[list[float], nn.Module]:
    """The textbook FedAvg loop in plain PyTorch, on ``data``'s split: accuracy per round, and
    the final model."""
    t, seed = config.train, config.federate.seed
    with seeded(seed):  # fltorrent builds the user's model under the same seed
        model: nn.Module = resolve(FACTORY, key="model.factory")(**config.model.options)
    ds = data.dataset
    x_all, y_all = torch.from_numpy(ds.x_train), torch.from_numpy(ds.y_train)
    curve = []
    for rnd in range(1, config.federate.total_round_num + 1):
        states, weights = [], []
        for k, part in enumerate(data.train_parts):
            local = copy.deepcopy(model)
            opt = torch.optim.SGD(local.parameters(), lr=t.lr, momentum=t.momentum)
            # The batch order fltorrent's peer k + 1 draws in this round, so that the two runs
            # differ only in what the systems do, not in the luck of the shuffle.
            gen = torch.Generator().manual_seed((seed * 1000 + k + 1) * 100_003 + rnd)
            x, y = x_all[torch.from_numpy(part)], y_all[torch.from_numpy(part)]
            local.train()
            for _ in range(t.local_epochs):
                order = torch.randperm(len(y), generator=gen)
                for first in range(0, len(y), t.batch_size):
                    idx = order[first : first + t.batch_size]
                    opt.zero_grad()
                    loss = F.cross_entropy(local(x[idx]), y[idx])
                    loss.backward()
                    opt.step()
            states.append(local.state_dict())
            weights.append(float(len(y)))
        total = sum(weights)
        averaged = {}
        for key, first_value in states[0].items():
            if first_value.is_floating_point():
                pairs = zip(weights, states, strict=True)
                averaged[key] = sum(w * s[key] for w, s in pairs) / total
            else:  # BatchNorm's step counter
                averaged[key] = first_value
        model.load_state_dict(averaged)
        model.eval()
        with torch.no_grad():
            correct = sum(
                int((model(data.x_test[i : i + 1000]).argmax(1) == data.y_test[i : i + 1000]).sum())
                for i in range(0, len(data.y_test), 1000)
            )
        curve.append(correct / len(data.y_test))
        print(f"plain round {rnd}: {curve[-1]:.4f}", file=sys.stderr)
    return curve, model


def bench_config(root: Path, ns: argparse.Namespace, *extra: str) -> Config:
    """The federation the benchmark runs (``ns``: the command line's settings)."""
    return load_config(
        None,
        [
            "federate.mode=sim",
            "output.progress=none",
            "output.save_model=false",
            f"federate.client_num={ns.peers}",
            f"federate.total_round_num={ns.rounds}",
            f"federate.seed={ns.seed}",
            "data.name=cifar10",
            f"data.path={root}",
            f"data.num_samples={ns.samples}",
            f"data.partition={ns.partition}",
            f"data.alpha={ns.alpha}",
            f"model.factory={FACTORY}",
            f"model.options={{width: {ns.width}, classes: 10}}",
            f"train.local_epochs={ns.epochs}",
            f"train.lr={ns.lr}",
            "train.batch_size=32",
            "train.momentum=0.9",
            *extra,
        ],
    )


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (``argv``, or the process's)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--peers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--samples", type=int, default=6000, help="train + test, drawn")
    parser.add_argument("--width", type=int, default=16, help="the ResNet's first width")
    parser.add_argument("--partition", default="iid", help="iid, or dirichlet with --alpha")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cifar-root", type=Path, default=None, help="a real local copy")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main() -> None:
    ns = arguments()
    with tempfile.TemporaryDirectory() as tmp:
        root = ns.cifar_root
        if root is None:
            root = Path(tmp)
            write_cifar10(root, train=ns.samples * 5 // 6, test=ns.samples // 6, seed=ns.seed)
        config = bench_config(root, ns)
        data = load_federation_data(config)
        assert data is not None
        real = ns.cifar_root is not None
        torch.set_num_threads(config.runtime.torch_threads)
        t0 = time.perf_counter()
        ours = fltorrent_curve(config)
        t1 = time.perf_counter()
        plain, _ = plain_fedavg(config, data)
        t2 = time.perf_counter()
    data_name = "CIFAR-10" if real else "CIFAR-10 stand-in (generated)"
    print(
        f"{data_name}, {len(data.y_test)} test samples, {ns.peers} peers, {ns.partition} split, "
        f"ResNet width {ns.width}: test accuracy after each round"
    )
    print(f"{'round':>5} {'fltorrent':>10} {'plain':>10}")
    for i, (a, b) in enumerate(zip(ours, plain, strict=True)):
        print(f"{i + 1:>5} {a:>10.4f} {b:>10.4f}")
    gap = ours[-1] - plain[-1]
    print(f"final gap {100 * gap:+.2f} points; wall {t1 - t0:.1f} s vs {t2 - t1:.1f} s")
    if ns.json is not None:
        out: dict[str, Any] = {
            "setting": vars(ns) | {"json": str(ns.json), "cifar_root": str(ns.cifar_root)},
            "data": data_name,
            "fltorrent": ours,
            "plain_fedavg": plain,
            "final_gap_points": 100 * gap,
            "wall_s": {"fltorrent": t1 - t0, "plain_fedavg": t2 - t1},
        }
        ns.json.parent.mkdir(parents=True, exist_ok=True)
        ns.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
