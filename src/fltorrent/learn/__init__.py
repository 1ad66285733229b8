"""The learning side of fltorrent: datasets, partitioners, models, training and chunk plans.

Everything here is pure and synchronous: functions take explicit keyword arguments, keep their
randomness in local seeded generators and do no I/O beyond the optional MNIST-1D cache.
"""

from fltorrent.learn._elements import SUPPORTED_DTYPES
from fltorrent.learn.chunking import Chunk, ChunkPlan, Segment, TensorSpec
from fltorrent.learn.data import DATASET_NAMES, Dataset, load_dataset
from fltorrent.learn.models import MODEL_NAMES, build_model
from fltorrent.learn.partition import PARTITION_METHODS, partition, split_test_like
from fltorrent.learn.train import OPTIMIZERS, TrainResult, evaluate, train_local

__all__ = [
    "DATASET_NAMES",
    "MODEL_NAMES",
    "OPTIMIZERS",
    "PARTITION_METHODS",
    "SUPPORTED_DTYPES",
    "Chunk",
    "ChunkPlan",
    "Dataset",
    "Segment",
    "TensorSpec",
    "TrainResult",
    "build_model",
    "evaluate",
    "load_dataset",
    "partition",
    "split_test_like",
    "train_local",
]
