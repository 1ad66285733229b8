"""Floating-point work of training and evaluation, for the simulated compute clock.

Simulation mode does not time real kernels (their duration is noise on a shared machine and
would make runs irreproducible); it charges each peer ``work / speed`` of virtual time, where
the work is counted here and the speed comes from the device profile. Forward FLOPs per sample
are counted once per model with PyTorch's own :class:`torch.utils.flop_counter.FlopCounterMode`
(matrix multiplications and convolutions, the dominant terms); a training step costs about three
forward passes (forward, plus backward for activations and for weights: Kaplan et al., "Scaling
Laws for Neural Language Models", 2020, §2.1 use the same 1 : 2 forward/backward split).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

TRAIN_FACTOR = 3.0
"""Training FLOPs per sample as a multiple of forward FLOPs."""


def forward_flops_per_sample(model: nn.Module, sample: torch.Tensor) -> float:
    """Forward FLOPs of ``model`` for one input sample (``sample`` without batch dimension)."""
    batch = torch.stack([sample, sample])  # 2: batch-norm layers refuse a batch of 1 in training
    was_training = model.training
    fastpath = torch.backends.mha.get_fastpath_enabled()
    model.eval()
    # In eval mode without grad, Transformer layers take a fused kernel the counter cannot see
    # (it would count them as zero); count the ordinary path, the one training runs.
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(batch)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
    # Elementwise work (activations, norms) is not counted; floor at one FLOP per parameter.
    params = sum(p.numel() for p in model.parameters())
    return max(float(counter.get_total_flops()) / 2.0, float(params))
