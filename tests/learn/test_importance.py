"""Chunk importance scorers on tiny models where the right answer is known by hand."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from fltorrent.errors import LearnError
from fltorrent.learn.chunking import ChunkPlan
from fltorrent.learn.importance import (
    ADAPTIVE_LOSS_DROP,
    IMPORTANCE_METHODS,
    ImportanceScorer,
    ScoreInputs,
)

F32_MAX = float(np.finfo(np.float32).max)
N_SAMPLES = 16


class Branchy(nn.Module):
    """``head(a(x) + b(x) + 0 * dead(x))``: linear, so a zero branch does not block the others.

    With ``chunk_bytes=48`` every weight is one chunk: a, b, dead (12 floats each), head (6).
    """

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 3, bias=False)
        self.b = nn.Linear(4, 3, bias=False)
        self.dead = nn.Linear(4, 3, bias=False)
        self.head = nn.Linear(3, 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.a(x) + self.b(x) + 0.0 * self.dead(x))
        return out


A, B, DEAD, HEAD = range(4)
NAMES = ("a.weight", "b.weight", "dead.weight", "head.weight")


def _model() -> Branchy:
    torch.manual_seed(0)
    model = Branchy()
    model.train()
    return model


def _plan(model: nn.Module) -> ChunkPlan:
    plan = ChunkPlan.from_state_dict(model.state_dict(), chunk_bytes=48)
    assert [[s.tensor for s in c.segments] for c in plan.chunks] == [[0], [1], [2], [3]]
    return plan


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(N_SAMPLES, 4, generator=g), torch.randint(0, 2, (N_SAMPLES,), generator=g)


def _inputs(
    model: nn.Module,
    *,
    deltas: Sequence[float | np.ndarray] | None = None,
    train_loss: float = 1.0,
    round_: int = 0,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ScoreInputs:
    """Inputs whose chunk ``i`` moved by ``deltas[i]`` (a scalar for every element, or a vector)."""
    plan = _plan(model)
    before = plan.state_to_vectors(model.state_dict())
    if deltas is None:
        deltas = [0.0] * plan.num_chunks
    with np.errstate(invalid="ignore"):  # inf + -inf in the non-finite tests
        after = [
            b + np.broadcast_to(np.asarray(d, dtype=np.float64), b.shape)
            for b, d in zip(before, deltas, strict=True)
        ]
    x, y = data if data is not None else _data()
    return ScoreInputs(
        plan=plan,
        before=before,
        after=after,
        model=model,
        x=x,
        y=y,
        train_loss=train_loss,
        round=round_,
    )


def _scorer(method: str, seed: int = 0, **options: Mapping[str, Any]) -> ImportanceScorer:
    return ImportanceScorer(method, options=options, seed=seed)


def _check_valid(scores: Sequence[float], n: int) -> None:
    assert len(scores) == n
    assert all(isinstance(s, float) and math.isfinite(s) and 0.0 <= s <= F32_MAX for s in scores)


# --- construction ------------------------------------------------------------------------------


def test_unknown_method_is_rejected() -> None:
    with pytest.raises(LearnError, match="unknown importance method"):
        ImportanceScorer("bogus")


@pytest.mark.parametrize("method", IMPORTANCE_METHODS)
def test_every_method_starts_with_no_backward_samples(method: str) -> None:
    assert ImportanceScorer(method).last_backward_samples == 0


# --- magnitude and l2_norm -----------------------------------------------------------------------


def test_unchanged_chunk_scores_zero_and_larger_updates_score_higher() -> None:
    model = _model()
    inputs = _inputs(model, deltas=[0.1, 0.0, 0.5, -2.0])
    for scorer in (
        _scorer("magnitude"),
        _scorer("l2_norm"),
        _scorer("l2_norm", l2_norm={"normalize_by_size": False, "depth_boost": 0.0}),
    ):
        scores = scorer.score(inputs)
        _check_valid(scores, 4)
        assert scores[B] == 0.0
        assert min(scores) == scores[B]
        assert scores[B] < scores[A] < scores[DEAD]
        assert scorer.last_backward_samples == 0
    # Single round, no variance: exactly the mean absolute update.
    scores = _scorer("magnitude", magnitude={"use_variance": False}).score(inputs)
    assert scores == pytest.approx([0.1, 0.0, 0.5, 2.0])


def test_magnitude_is_the_mean_absolute_update() -> None:
    delta = np.array([1.0, -1.0, 3.0, -3.0] * 3)  # mean |d| = 2, mean d = 0
    scores = _scorer("magnitude", magnitude={"use_variance": False}).score(
        _inputs(_model(), deltas=[delta, 0.0, 0.0, 0.0])
    )
    assert scores == pytest.approx([2.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize(
    ("normalize", "boost", "expected"),
    [
        # chunk a: |(3, 4, 0, ...)| = 5 over 12 elements, depth 0 (tensor 0 of 0..3)
        # chunk b: twelve ones, |.| = sqrt(12), depth 1/3
        # chunk dead: zero, depth 2/3
        # chunk head: six twos, |.| = 2 sqrt(6), depth 1
        (False, 0.0, [5.0, math.sqrt(12), 0.0, 2 * math.sqrt(6)]),
        (True, 0.0, [5 / math.sqrt(12), 1.0, 0.0, 2.0]),
        (False, 0.6, [5.0, math.sqrt(12) * 1.2, 0.0, 2 * math.sqrt(6) * 1.6]),
        (True, 0.6, [5 / math.sqrt(12), 1.2, 0.0, 2.0 * 1.6]),
    ],
)
def test_l2_norm_by_hand(normalize: bool, boost: float, expected: list[float]) -> None:
    d_a = np.zeros(12)
    d_a[:2] = [3.0, -4.0]
    inputs = _inputs(_model(), deltas=[d_a, 1.0, 0.0, 2.0])
    scorer = _scorer("l2_norm", l2_norm={"normalize_by_size": normalize, "depth_boost": boost})
    assert scorer.score(inputs) == pytest.approx(expected)


def test_l2_norm_defaults_normalize_and_boost_by_0_3() -> None:
    inputs = _inputs(_model(), deltas=[1.0, 1.0, 1.0, 1.0])
    assert _scorer("l2_norm").score(inputs) == pytest.approx([1.0, 1.1, 1.2, 1.3])


def test_l2_norm_depth_comes_from_the_chunks_first_tensor() -> None:
    # Two tensors, the first split into row chunks: all of its chunks are at depth 0.
    state = {"w0": torch.zeros(4, 2), "w1": torch.zeros(2)}
    plan = ChunkPlan.from_state_dict(state, chunk_bytes=8)
    assert [c.segments[0].tensor for c in plan.chunks] == [0, 0, 0, 0, 1]
    before = plan.state_to_vectors(state)
    inputs = ScoreInputs(
        plan=plan,
        before=before,
        after=[b + 1.0 for b in before],
        model=nn.Identity(),
        x=torch.zeros(0, 2),
        y=torch.zeros(0, dtype=torch.long),
        train_loss=0.0,
        round=0,
    )
    scores = _scorer("l2_norm", l2_norm={"depth_boost": 1.0}).score(inputs)
    assert scores == pytest.approx([1.0, 1.0, 1.0, 1.0, 2.0])


@pytest.mark.parametrize("use_variance", [True, False])
def test_magnitude_history_window(use_variance: bool) -> None:
    model = _model()
    scorer = _scorer("magnitude", magnitude={"history_window": 3, "use_variance": use_variance})
    rounds = [1.0, 2.0, 3.0, 4.0, 5.0, 0.0]
    seen: list[float] = []
    for r, mag in enumerate(rounds):
        scores = scorer.score(_inputs(model, deltas=[mag, 0.0, -mag, 2.0], round_=r))
        seen.append(mag)
        window = np.array(seen[-3:])
        expected = window.mean() + (window.std() if use_variance else 0.0)
        assert scores[A] == pytest.approx(expected)
        assert scores[DEAD] == pytest.approx(expected)  # the sign of the update does not matter
        assert scores[B] == 0.0
        assert scores[HEAD] == pytest.approx(2.0)  # a steady update has no variance
    # The last window is 4, 5, 0: mean 3, population std sqrt(14/3).
    assert scores[A] == pytest.approx(3.0 + (math.sqrt(14 / 3) if use_variance else 0.0))


def test_magnitude_variance_boosts_a_swinging_chunk() -> None:
    model = _model()
    scorer = _scorer("magnitude", magnitude={"history_window": 4})
    for r, swing in enumerate([0.0, 2.0, 0.0, 2.0]):
        scores = scorer.score(_inputs(model, deltas=[swing, 1.0, 0.0, 0.0], round_=r))
    # Both average 1, but chunk a swings (std 1) while chunk b is steady (std 0).
    assert scores[A] == pytest.approx(2.0)
    assert scores[B] == pytest.approx(1.0)


# --- snip ----------------------------------------------------------------------------------------


def _manual_grads(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(x), y).backward()
    grads = {
        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
        for n, p in model.named_parameters()
    }
    model.zero_grad(set_to_none=True)
    return grads


def test_snip_by_hand_and_zero_weights_score_zero() -> None:
    model = _model()
    with torch.no_grad():
        model.a.weight.zero_()
    x, y = _data()
    grads = _manual_grads(model, x, y)
    assert grads["a.weight"].abs().sum() > 0  # a still gets a gradient, but |g x 0| = 0
    params = {n: p.detach() for n, p in model.named_parameters()}
    expected = [float((grads[n] * params[n]).abs().sum()) for n in NAMES]

    scorer = _scorer("snip", snip={"batch_size": 128})  # more than the data: the whole set
    scores = scorer.score(_inputs(model))
    _check_valid(scores, 4)
    assert scores == pytest.approx(expected, rel=1e-5)
    assert scores[A] == 0.0
    assert scores[DEAD] == 0.0  # zero gradient
    assert scores[B] > 0 and scores[HEAD] > 0
    assert scorer.last_backward_samples == N_SAMPLES


def test_snip_uses_one_batch_of_batch_size() -> None:
    model = _model()
    scorer = _scorer("snip", snip={"batch_size": 5})
    scores = scorer.score(_inputs(model, round_=3))
    assert scorer.last_backward_samples == 5
    # The same round picks the same batch; another round (almost surely) another one.
    assert scorer.score(_inputs(model, round_=3)) == scores
    assert scorer.score(_inputs(model, round_=4)) != scores
    assert scorer.last_backward_samples == 5


def test_snip_use_cached_scores_the_gradients_training_left() -> None:
    # FLTorrent's snip.use_cached: no extra pass; the last training step's gradients are used
    # (and cleared). With none left, it falls back to a fresh batch.
    model = _model()
    x, y = _data()
    nn.functional.cross_entropy(model(x[:7]), y[:7]).backward()  # "the last training step"
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    params = {n: p.detach() for n, p in model.named_parameters()}
    expected = [float((grads[n] * params[n]).abs().sum()) if n in grads else 0.0 for n in NAMES]
    scorer = _scorer("snip", snip={"batch_size": 128, "use_cached": True})
    assert scorer.score(_inputs(model)) == pytest.approx(expected, rel=1e-6)
    assert scorer.last_backward_samples == 0
    assert all(p.grad is None for p in model.parameters())
    fresh = scorer.score(_inputs(model))  # nothing cached now: a batch, as without the option
    assert scorer.last_backward_samples == N_SAMPLES
    assert fresh == pytest.approx(_scorer("snip", snip={"batch_size": 128}).score(_inputs(model)))


def test_gradient_scorers_leave_the_model_as_they_found_it() -> None:
    model = _model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for method in ("snip", "fisher"):
        for training in (True, False):
            model.train(training)
            scorer = _scorer(method)
            with torch.no_grad():  # a caller in no-grad mode still gets gradient scores
                scores = scorer.score(_inputs(model))
            assert scores[B] > 0
            assert model.training is training
            assert all(p.grad is None for p in model.parameters())
            for k, v in model.state_dict().items():
                assert torch.equal(v, state[k])


# --- fisher --------------------------------------------------------------------------------------


def test_fisher_by_hand_and_zero_gradient_gives_the_damping() -> None:
    model = _model()
    x, y = _data()
    damping = 0.01
    sq = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(N_SAMPLES):
        for n, g in _manual_grads(model, x[i : i + 1], y[i : i + 1]).items():
            sq[n] += g**2
    expected = [float(sq[n].sum()) / N_SAMPLES + sq[n].numel() * damping for n in NAMES]

    scorer = _scorer("fisher", fisher={"num_samples": 100, "damping": damping})
    scores = scorer.score(_inputs(model))
    _check_valid(scores, 4)
    assert scores == pytest.approx(expected, rel=1e-5)
    assert scores[DEAD] == pytest.approx(12 * damping)
    assert scores[A] > 12 * damping and scores[HEAD] > 6 * damping
    assert scorer.last_backward_samples == N_SAMPLES


def test_fisher_frozen_parameter_gives_the_damping() -> None:
    model = _model()
    model.b.weight.requires_grad_(False)
    scorer = _scorer("fisher", fisher={"num_samples": 7, "damping": 0.5})
    scores = scorer.score(_inputs(model))
    assert scorer.last_backward_samples == 7
    assert scores[B] == pytest.approx(12 * 0.5)
    assert scores[DEAD] == pytest.approx(12 * 0.5)
    assert scores[A] > 12 * 0.5
    # snip gives a frozen parameter 0.
    assert _scorer("snip").score(_inputs(model))[B] == 0.0


def test_gradient_scorers_without_data() -> None:
    model = _model()
    empty = (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    snip = _scorer("snip")
    assert snip.score(_inputs(model, data=empty)) == [0.0] * 4
    assert snip.last_backward_samples == 0
    fisher = _scorer("fisher", fisher={"damping": 0.25})
    assert fisher.score(_inputs(model, data=empty)) == pytest.approx([3.0, 3.0, 3.0, 1.5])
    assert fisher.last_backward_samples == 0


# --- random --------------------------------------------------------------------------------------


def test_random_is_deterministic_per_seed_and_round() -> None:
    model = _model()
    a = _scorer("random", seed=7)
    s0 = a.score(_inputs(model, round_=0))
    _check_valid(s0, 4)
    assert all(0.0 <= s < 1.0 for s in s0)
    assert a.last_backward_samples == 0
    # Independent of the update and of the scorer's past calls.
    assert a.score(_inputs(model, deltas=[1.0, 2.0, 3.0, 4.0], round_=0)) == s0
    assert _scorer("random", seed=7).score(_inputs(model, round_=0)) == s0
    assert a.score(_inputs(model, round_=1)) != s0
    assert _scorer("random", seed=8).score(_inputs(model, round_=0)) != s0
    many = [s for r in range(50) for s in a.score(_inputs(model, round_=r))]
    assert all(0.0 <= s < 1.0 for s in many)
    assert len(set(many)) == len(many)


# --- adaptive ------------------------------------------------------------------------------------


def test_adaptive_switches_between_magnitude_and_snip() -> None:
    model = _model()
    options: dict[str, Any] = {"magnitude": {"history_window": 3}, "snip": {"batch_size": 6}}
    adaptive = ImportanceScorer("adaptive", options=options)
    magnitude = ImportanceScorer("magnitude", options=options)
    snip = ImportanceScorer("snip", options=options)
    # (loss, method): the first round is moving; then > 5 % drop moves, anything else settles.
    plan = [
        (1.0, "magnitude"),
        (0.5, "magnitude"),
        (0.49, "snip"),
        (0.3, "magnitude"),
        (0.3, "snip"),
        (0.4, "snip"),
        (0.2, "magnitude"),
        (0.2 * (1 - ADAPTIVE_LOSS_DROP), "snip"),  # exactly 5 %: not more than 5 %
        (0.2 * (1 - ADAPTIVE_LOSS_DROP) ** 2 * 0.999, "magnitude"),
    ]
    for r, (loss, method) in enumerate(plan):
        inputs = _inputs(
            model, deltas=[r + 1.0, 0.0, 1.0, 2.0 * (r % 2)], train_loss=loss, round_=r
        )
        got = adaptive.score(inputs)
        # The magnitude reference sees every round: adaptive keeps its history while on snip.
        want_mag = magnitude.score(inputs)
        if method == "magnitude":
            assert got == pytest.approx(want_mag), r
            assert adaptive.last_backward_samples == 0
        else:
            assert got == pytest.approx(snip.score(inputs)), r
            assert adaptive.last_backward_samples == 6


# --- non-finite and huge inputs -----------------------------------------------------------------


@pytest.mark.parametrize("method", IMPORTANCE_METHODS)
def test_scores_are_finite_and_non_negative_with_nan_and_inf(method: str) -> None:
    model = _model()
    with torch.no_grad():
        model.a.weight[0, 0] = float("nan")
        model.head.weight[0, 0] = float("inf")
    d_a = np.ones(12)
    d_a[0] = np.nan
    d_b = np.ones(12)
    d_b[0] = np.inf
    d_head = np.full(6, -np.inf)
    scorer = _scorer(method)
    for r in range(3):
        inputs = _inputs(model, deltas=[d_a, d_b, 1.0, d_head], train_loss=float("nan"), round_=r)
        _check_valid(scorer.score(inputs), 4)


def test_a_non_finite_round_does_not_poison_the_magnitude_history() -> None:
    model = _model()
    scorer = _scorer("magnitude", magnitude={"history_window": 3, "use_variance": False})
    assert scorer.score(_inputs(model, deltas=[np.nan, np.inf, 1.0, 1.0]))[:2] == [0.0, 0.0]
    scores = scorer.score(_inputs(model, deltas=[1.0, 1.0, 1.0, 1.0], round_=1))
    assert scores == pytest.approx([0.5, 0.5, 1.0, 1.0])


def test_huge_scores_are_clipped_to_float32() -> None:
    # Finite in float64 but not in float32, which is what the manifest carries.
    inputs = _inputs(_model(), deltas=[3e38, 0.0, 1.0, 0.0])
    scores = _scorer("l2_norm", l2_norm={"normalize_by_size": False}).score(inputs)
    assert scores[A] == F32_MAX
    assert scores[DEAD] == pytest.approx(math.sqrt(12) * 1.2)


@pytest.mark.parametrize(
    ("name", "shape"), [("cnn2d", (1, 8, 8)), ("resnet", (20,)), ("transformer", (20,))]
)
def test_vectorized_fisher_equals_one_backward_per_sample(
    name: str, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fltorrent.learn import importance
    from fltorrent.learn.models import build_model

    model = build_model(name, input_shape=shape, num_classes=4, hidden=4, seed=1)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((40, *shape), generator=g)
    y = torch.randint(0, 4, (40,), generator=g)
    model.eval()
    fast = importance._per_sample_grad_squares(model, x, y)

    def refuse(*_a: object, **_k: object) -> None:
        raise RuntimeError("not vectorizable")

    monkeypatch.setattr(torch.func, "vmap", refuse)
    slow = importance._per_sample_grad_squares(model, x, y)
    assert fast.keys() == slow.keys() and fast
    for k in fast:
        torch.testing.assert_close(fast[k], slow[k], rtol=1e-4, atol=1e-7)
