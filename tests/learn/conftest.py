"""Shared fixtures for the learn tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread_torch() -> Iterator[None]:
    # The models here are tiny, so intra-op threads only add synchronisation; on a busy machine
    # that turns milliseconds into seconds. Restore the setting for other test packages.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
