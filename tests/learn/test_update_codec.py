"""Published updates: raw chunks or compressed deltas, their manifest checks, the FLOP model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fltorrent.errors import LearnError
from fltorrent.learn.chunking import ChunkPlan
from fltorrent.learn.flops import TRAIN_FACTOR, forward_flops_per_sample
from fltorrent.learn.models import build_model
from fltorrent.learn.update_codec import (
    DELTA_MARKER,
    UpdateEncoder,
    decode_updates,
    manifest_problem,
    piece_vector,
)


def plan_and_vectors(seed: int = 0) -> tuple[ChunkPlan, list[np.ndarray], list[np.ndarray]]:
    model = build_model("mlp", input_shape=(40,), num_classes=10, hidden=16, seed=0)
    plan = ChunkPlan.from_state_dict(model.state_dict(), num_chunks=5)
    before = plan.state_to_vectors(model.state_dict())
    rng = np.random.default_rng(seed)
    # Trained values are float32 parameters, as in a real round.
    after = [
        plan.chunk_to_vector(i, plan.vector_to_chunk(i, b + rng.normal(0, 0.01, b.shape)))
        for i, b in enumerate(before)
    ]
    return plan, before, after


def raw_pieces(plan: ChunkPlan, vectors: list[np.ndarray]) -> list[bytes]:
    return [plan.vector_to_chunk(i, v) for i, v in enumerate(vectors)]


def test_raw_update_is_the_trained_chunks() -> None:
    plan, before, after = plan_and_vectors()
    raw = raw_pieces(plan, after)
    enc = UpdateEncoder(plan).encode("none", before=before, after=after, raw_pieces=raw)
    assert enc.pieces == raw and enc.meta == plan.digest() and enc.bytes_saved == 0
    assert manifest_problem(plan, enc.meta, [len(p) for p in enc.pieces]) is None
    for i, p in enumerate(enc.pieces):
        np.testing.assert_array_equal(
            piece_vector(plan, enc.meta, i, p, before[i] * 0), enc.vectors[i]
        )


@pytest.mark.parametrize("codec", ["topk", "q8"])
def test_compressed_delta_round_trip(codec: str) -> None:
    plan, before, after = plan_and_vectors()
    raw = raw_pieces(plan, after)
    enc = UpdateEncoder(plan, topk_ratio=0.1).encode(
        codec,  # type: ignore[arg-type]
        before=before,
        after=after,
        raw_pieces=raw,
    )
    assert enc.meta == plan.digest() + DELTA_MARKER
    sizes = [len(p) for p in enc.pieces]
    assert enc.bytes_saved == sum(len(r) for r in raw) - sum(sizes) > 0
    assert manifest_problem(plan, enc.meta, sizes) is None
    for i, p in enumerate(enc.pieces):
        # A receiver with the same round-start model recovers what the author aggregates.
        got = piece_vector(plan, enc.meta, i, p, before[i])
        np.testing.assert_allclose(got, enc.vectors[i], rtol=0, atol=1e-12)
        err = np.abs(got - after[i]).max()
        if codec == "q8":
            assert err <= np.ptp(after[i] - before[i]) / 255  # within one quantization step
        else:
            assert np.count_nonzero(got - before[i]) == max(1, round(0.1 * len(got)))


def test_error_feedback_carries_over_rounds() -> None:
    plan, before, after = plan_and_vectors()
    encoder = UpdateEncoder(plan, topk_ratio=0.05)
    sent = [np.zeros_like(b) for b in before]
    error_at: dict[int, float] = {}
    for t in range(1, 61):  # the same update every round: what is not sent now is sent later
        enc = encoder.encode("topk", before=before, after=after, raw_pieces=raw_pieces(plan, after))
        for i, v in enumerate(enc.vectors):
            sent[i] += v - before[i]
        # What is still owed is the residual: bounded, while what was sent grows with t.
        error_at[t] = max(
            float(np.abs(sent[i] - t * (after[i] - before[i])).max()) for i in range(len(sent))
        )
    step = max(float(np.abs(a - b).max()) for a, b in zip(after, before, strict=True))
    assert error_at[60] <= error_at[20] * 1.5  # not growing
    assert error_at[60] < 60 * step / 5  # far below the owed total
    # Without feedback a coordinate never in the top k would be owed all of it: t * step.


def test_manifest_problems_are_named() -> None:
    plan, _before, _after = plan_and_vectors()
    raw_sizes = [c.nbytes for c in plan.chunks]
    assert "sizes" in (manifest_problem(plan, plan.digest(), raw_sizes[:-1]) or "")
    assert "differs" in (manifest_problem(plan, b"x" * 32, raw_sizes) or "")
    delta = plan.digest() + DELTA_MARKER
    assert "count" in (manifest_problem(plan, delta, [10] * (plan.num_chunks + 1)) or "")
    too_big = [c.numel * 9 + 100 for c in plan.chunks]
    assert "exceeds" in (manifest_problem(plan, delta, too_big) or "")


def test_malformed_compressed_piece_is_a_learn_error() -> None:
    plan, before, after = plan_and_vectors()
    enc = UpdateEncoder(plan).encode(
        "q8", before=before, after=after, raw_pieces=raw_pieces(plan, after)
    )
    with pytest.raises(LearnError):
        piece_vector(plan, enc.meta, 0, enc.pieces[0][:-1], before[0])
    with pytest.raises(LearnError):
        piece_vector(plan, enc.meta, 0, enc.pieces[2], before[0])  # another chunk's length


def test_flop_count_of_a_linear_model() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40, 10))
    # 40 x 10 multiply-adds = 800 FLOPs per sample.
    assert forward_flops_per_sample(model, torch.zeros(40)) == 800.0
    assert TRAIN_FACTOR == 3.0
    cnn = build_model("cnn1d", input_shape=(40,), num_classes=10, hidden=32, seed=0)
    assert forward_flops_per_sample(cnn, torch.zeros(40)) > 10 * sum(
        p.numel() for p in cnn.parameters()
    )  # convolutions reuse weights across positions


def test_flop_count_sees_transformer_layers() -> None:
    model = build_model("transformer", input_shape=(40,), num_classes=10, hidden=32, seed=0)
    counted = forward_flops_per_sample(model, torch.zeros(40))
    # Attention and feed-forward matmuls over 10 tokens: several times the parameter count
    # (the count fell back to the parameter count when the fused eval path hid the layers).
    assert counted > 5 * sum(p.numel() for p in model.parameters())
    with torch.utils.flop_counter.FlopCounterMode(display=False) as train_mode:
        model.train()
        model(torch.zeros(2, 40))
    assert counted == pytest.approx(train_mode.get_total_flops() / 2, rel=0.01)  # batch of 2
    assert torch.backends.mha.get_fastpath_enabled()  # restored


def test_a_diverged_update_is_published_raw() -> None:
    plan, before, after = plan_and_vectors()
    after = [a.copy() for a in after]
    after[1][0] = 1e300  # beyond float32: cannot be encoded as a compressed delta
    raw = raw_pieces(plan, after)
    enc = UpdateEncoder(plan).encode("q8", before=before, after=after, raw_pieces=raw)
    assert enc.meta == plan.digest() and enc.pieces == raw and enc.bytes_saved == 0


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_an_update_with_values_that_are_not_finite_is_dropped_whole(value: float) -> None:
    plan, before, after = plan_and_vectors()
    bad = [a.copy() for a in after]
    bad[3][5] = value  # one coordinate of one chunk
    held = {
        2: (10.0, plan.digest(), raw_pieces(plan, after)),
        7: (10.0, plan.digest(), raw_pieces(plan, bad)),
    }
    decoded, dropped = decode_updates(plan, before, held)
    assert list(decoded) == [2] and list(dropped) == [7]
    assert "chunk 3" in dropped[7] and "not finite" in dropped[7]
    np.testing.assert_array_equal(decoded[2][1][3], after[3])
