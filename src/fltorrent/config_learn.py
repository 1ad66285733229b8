"""Config sections of the learning side: ``data`` (built-in dataset and split, or the user's
data factory), ``model`` (the zoo, or the user's model factory) and ``train`` (local training,
FedProx, FedAvgM, the user's step and evaluation).

Part of the configuration tree of :mod:`fltorrent.config` (kept apart for size, as
``config_robust``); the same rules hold: every key has a default, and a bad value is refused with
its key path before anything starts.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from fltorrent.config_types import DEVICE_PATTERN, ImportString, PositiveInt, Section
from fltorrent.errors import ConfigError


def _names_peer(path: str | None) -> bool:
    """Whether ``path`` has a {peer} placeholder (with a format spec or not)."""
    try:
        return any(f == "peer" for _, f, _, _ in string.Formatter().parse(path or ""))
    except ValueError:
        return False


class DataConfig(Section):
    """Built-in dataset and how it is split among peers, or the user's own (``factory``)."""

    name: Literal["mnist1d", "digits", "synthetic", "cifar10", "emnist", "femnist", "files"] = (
        "mnist1d"
    )
    path: str | None = Field(
        None,
        description="cifar10, emnist, femnist: the folder holding the local copy; files: a "
        "folder of images (one sub-folder per class), .npz, .pt or .csv, split among the peers "
        "as the built-in data, or, with {peer} in it (data/peer{peer}.npz), each peer's own",
    )
    emnist_split: Literal["byclass", "bymerge", "balanced", "letters", "digits", "mnist"] = (
        "balanced"
    )
    label_column: int | str = Field(
        -1, description="files, CSV: the label's column, by index (default the last) or name"
    )
    image_size: tuple[PositiveInt, PositiveInt] | None = Field(
        None, description="files, images: resize every image to (height, width)"
    )
    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="files without a test split: the part held out"
    )
    classes: list[str] | None = Field(
        None,
        description="data from files (data.name files, fltorrent peer --data): the class "
        "names in order (class folders, CSV labels that are not numbers); needed when each "
        "peer brings its own data, so that every peer numbers a "
        "class alike, whatever classes its own data holds",
    )
    num_classes: PositiveInt | None = Field(
        None,
        description="classes of the federation, for a built-in model when each peer brings its "
        "own data (one peer's labels cannot tell)",
    )
    num_samples: PositiveInt | None = None
    partition: Literal["iid", "dirichlet", "shards", "natural"] = "dirichlet"
    alpha: float = Field(0.5, gt=0.0)
    shards_per_client: PositiveInt = 2
    min_samples: int = Field(10, ge=0)
    synthetic_alpha: float = Field(1.0, ge=0.0)
    synthetic_beta: float = Field(1.0, ge=0.0)
    cache_dir: Path | None = None
    factory: ImportString | None = Field(
        None,
        description="the user's data: an import string 'package.module:function', called on "
        "each peer with peer (from 1), num_peers, seed and the keyword arguments in "
        "data.options, returning (train, test) torch Datasets of (input, label) pairs "
        "(replaces name, num_samples and partition)",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for data.factory"
    )

    @property
    def per_peer(self) -> bool:
        """Each peer loads its own data (data.factory, or a data.path with {peer})."""
        return self.factory is not None or (self.name == "files" and _names_peer(self.path))

    def check(self) -> None:
        """Cross-checks of the section (called by the whole config's validator)."""
        local = self.name in ("cifar10", "emnist", "femnist", "files")
        if local and not self.path:
            raise ConfigError(f"data.name {self.name!r} needs data.path", path="data.path")
        if self.path is not None:
            if not local:
                raise ConfigError(
                    "is for data.name cifar10, emnist, femnist or files", path="data.path"
                )
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(self.path) if f is not None]
            except ValueError:
                fields = ["?"]
            if any(f != "peer" for f in fields):
                raise ConfigError(
                    f"{self.path!r}: the only placeholder is {{peer}} (with a format such as "
                    "{peer:03d})",
                    path="data.path",
                )
            try:
                self.path.format(peer=1)
            except ValueError as exc:
                raise ConfigError(f"{self.path!r}: {exc}", path="data.path") from None
            if fields and self.name != "files":
                raise ConfigError("{peer} is for data.name 'files'", path="data.path")
        if self.classes is not None:  # also for peers' own data (fltorrent peer --data)
            if len(set(self.classes)) != len(self.classes) or len(self.classes) < 2:
                raise ConfigError("needs two or more distinct names", path="data.classes")
            if self.num_classes is not None and self.num_classes != len(self.classes):
                raise ConfigError(
                    f"{self.num_classes} but data.classes names {len(self.classes)}",
                    path="data.num_classes",
                )
        if self.partition == "natural" and self.name not in ("synthetic", "femnist"):
            raise ConfigError(
                "'natural' needs data.name synthetic or femnist", path="data.partition"
            )


class ModelConfig(Section):
    """Which model: one of the zoo, or the user's own (``factory``)."""

    name: Literal["mlp", "cnn1d", "cnn2d", "resnet", "transformer"] = "cnn1d"
    hidden: PositiveInt = 32
    factory: ImportString | None = Field(
        None,
        description="the user's model: an import string 'package.module:function', called "
        "with the keyword arguments in model.options, returning a torch.nn.Module (replaces "
        "name and hidden); resolved from the current directory and installed packages",
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for model.factory"
    )


class TrainConfig(Section):
    """Local training on each peer."""

    local_epochs: PositiveInt = 1
    batch_size: PositiveInt = 32
    lr: float = Field(0.05, gt=0.0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    proximal_mu: float = Field(
        0.0,
        ge=0.0,
        allow_inf_nan=False,
        description="FedProx: weight of the proximal term mu/2 ||w - w_round_start||^2 in "
        "local training (0: plain FedAvg); 0.001-0.1 is the usual range",
    )
    server_momentum: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="FedAvgM: momentum each peer applies to its own aggregate, over rounds "
        "(0: the aggregate as it is); 0.9 is the usual value, with server_lr 1",
    )
    scaffold: bool = Field(
        False,
        description="SCAFFOLD: correct every local step by the federation's control variate "
        "minus the peer's own, both estimated from what each peer already holds (no extra "
        "bytes); SGD only",
    )
    server_lr: float = Field(
        1.0, gt=0.0, allow_inf_nan=False, description="FedAvgM: step along the velocity"
    )
    device: str = Field(
        "auto",
        pattern=DEVICE_PATTERN,
        description="where peers train: auto (a CUDA GPU when torch sees one, else the CPU), "
        "cpu, cuda or cuda:N; peers of one process share a GPU by their device profile's "
        "gpu_share (1 without profiles)",
    )
    step: ImportString | None = Field(
        None,
        description="the user's local training: step(model=, x=, y=, options=, seed=) trains "
        "the model in place on the peer's tensors and returns the mean loss (options: this "
        "section as a dict)",
    )
    evaluate: ImportString | None = Field(
        None, description="the user's evaluation: evaluate(model=, x=, y=) -> (accuracy, loss)"
    )
