"""A peer's defence: robust rules per chunk, outlier filter, trust; and the attackers' crafting."""

from __future__ import annotations

import numpy as np
import pytest

from fltorrent.aggregate import median, partial_aggregate, trimmed_mean
from fltorrent.aggregate.trust import TrustTable
from fltorrent.attacks.behaviour import Adversary
from fltorrent.config import load_config
from fltorrent.defense import Defense
from fltorrent.errors import ConfigError

D = (6, 4)  # two chunks
WIDE = (300, 200)  # chunks as wide as real ones: the filter judges noisy statistics on few


def honest_round(
    rng: np.random.Generator, n: int, dims: tuple[int, ...] = D
) -> tuple[list[np.ndarray], dict[int, tuple[float, dict[int, np.ndarray]]]]:
    base = [np.zeros(d) for d in dims]
    others = {
        a: (10.0, {c: 1 + 0.3 * rng.standard_normal(d) for c, d in enumerate(dims)})
        for a in range(2, n + 1)
    }
    return base, others


def test_plain_defense_is_partial_fedavg() -> None:
    rng = np.random.default_rng(0)
    base, others = honest_round(rng, 5)
    del others[3][1][1]  # author 3's chunk 1 did not arrive
    own = [np.full(d, 2.0) for d in D]
    out, report = Defense().aggregate(1, me=1, base=base, own=own, own_weight=5.0, others=others)
    want = partial_aggregate(
        own,
        [
            [(own[c], 5.0)] + [(v[c], w) for _, (w, v) in sorted(others.items()) if c in v]
            for c in range(2)
        ],
    )
    for a, b in zip(out, want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert report.authors == 5 and report.chunks_limited == 1 and report.flagged == []


def test_rule_runs_per_chunk_on_deltas_over_the_authors_that_delivered() -> None:
    rng = np.random.default_rng(1)
    base = [rng.standard_normal(d) for d in D]
    rows = {a: [base[c] + rng.standard_normal(D[c]) for c in range(2)] for a in range(1, 8)}
    others = {a: (1.0, {0: rows[a][0], 1: rows[a][1]}) for a in range(2, 8)}
    del others[7][1][1]
    defense = Defense(rule="trimmed_mean", rule_options={"f": 1})
    out, _ = defense.aggregate(1, me=1, base=base, own=rows[1], own_weight=1.0, others=others)
    want0 = base[0] + trimmed_mean(np.stack([rows[a][0] - base[0] for a in range(1, 8)]), 1)
    want1 = base[1] + trimmed_mean(np.stack([rows[a][1] - base[1] for a in range(1, 7)]), 1)
    np.testing.assert_allclose(out[0], want0)
    np.testing.assert_allclose(out[1], want1)


def test_too_few_contributors_fall_back_to_the_median_and_nothing_keeps_own() -> None:
    base = [np.zeros(d) for d in D]
    own = [np.ones(d) for d in D]
    others = {2: (1.0, {0: np.full(6, 3.0)}), 3: (1.0, {0: np.full(6, 8.0)})}
    defense = Defense(rule="krum", rule_options={"f": 1})  # needs n > 2f: 3 > 2 holds
    out, report = defense.aggregate(1, me=1, base=base, own=own, own_weight=None, others=others)
    # Chunk 0: only authors 2 and 3 (the peer did not train): krum(f=1) needs 3, median used.
    np.testing.assert_allclose(out[0], median(np.stack([np.full(6, 3.0), np.full(6, 8.0)])))
    np.testing.assert_array_equal(out[1], own[1])  # nobody delivered chunk 1
    assert report.fallbacks == 1


def test_detection_flags_a_scaled_and_a_flipped_author_and_trust_excludes_them_later() -> None:
    rng = np.random.default_rng(2)
    defense = Defense(detection=True, trust=TrustTable())
    seen_excluded = []
    for r in range(1, 4):
        base, others = honest_round(rng, 16, WIDE)
        others[15] = (10.0, {c: -others[15][1][c] for c in range(2)})  # sign flip
        others[16] = (10.0, {c: 20 * others[16][1][c] for c in range(2)})  # scaling
        if r == 3:  # they behave in round 3: flagged no more, still excluded by trust
            base, others = honest_round(rng, 16, WIDE)
        own = [np.ones(d) for d in WIDE]
        out, report = defense.aggregate(r, me=1, base=base, own=own, own_weight=10.0, others=others)
        seen_excluded.append(report.excluded)
        if r < 3:
            assert {15, 16} <= set(report.flagged)
            assert len(set(report.flagged) - {15, 16}) <= 1  # honest noise: rare false flags
            assert len(report.judged) == 15
        # Excluded authors do not move the aggregate: it stays near the honest mean.
        assert np.abs(out[0] - 1).max() < 0.5
    # Flagged twice (trust 1 -> 0.5 -> 0.25), one clean round (0.35): still excluded.
    assert {15, 16} <= set(seen_excluded[2])


def late_round(
    rng: np.random.Generator, n: int, flippers: set[int]
) -> tuple[list[np.ndarray], dict[int, tuple[float, dict[int, np.ndarray]]]]:
    """Late-training-like updates: a weak common direction under strong per-round noise, so
    single rounds hardly tell a sign flipper apart; flippers send their own update negated."""
    base = [np.zeros(d) for d in WIDE]
    common = [np.full(d, 0.05) for d in WIDE]
    others = {}
    for a in range(2, n + 1):
        sign = -1.0 if a in flippers else 1.0
        others[a] = (
            1.0,
            {c: sign * (common[c] + rng.standard_normal(d) / 3) for c, d in enumerate(WIDE)},
        )
    return base, others


@pytest.mark.parametrize("seed", range(3))
def test_momentum_finds_sign_flippers_that_single_rounds_miss(seed: int) -> None:
    flippers = {17, 18, 19, 20}
    caught = {0.0: 0, 0.9: 0}
    false = {0.0: 0, 0.9: 0}
    for momentum in caught:
        rng = np.random.default_rng(seed)
        defense = Defense(detection=True, momentum=momentum)
        for r in range(1, 16):
            base, others = late_round(rng, 20, flippers)
            own = [np.full(d, 0.05) + rng.standard_normal(d) / 3 for d in WIDE]
            _, report = defense.aggregate(
                r, me=1, base=base, own=own, own_weight=1.0, others=others
            )
            if r > 5:  # once the averages have had a few rounds
                caught[momentum] += len(flippers & set(report.flagged))
                false[momentum] += len(set(report.flagged) - flippers)
    # 4 flippers x the last 10 rounds = 40 verdicts: averages find at least 90 % of them, single
    # rounds at most half (8-15 in seeds 0-7). Honest rows are deliberately noisy here: both
    # flag 4-10 % of the 150 honest verdicts (0-21 with momentum in seeds 0-7, 6-12 without).
    assert caught[0.9] >= 36
    assert caught[0.0] <= 20
    assert false[0.9] <= 15


def test_momentum_flags_a_scaling_burst_in_its_first_round() -> None:
    rng = np.random.default_rng(7)
    defense = Defense(detection=True, momentum=0.9)
    for r in range(1, 8):
        base, others = late_round(rng, 20, set())
        if r == 7:
            others[20] = (1.0, {c: -10 * v for c, v in others[20][1].items()})
        own = [np.full(d, 0.05) + rng.standard_normal(d) / 3 for d in WIDE]
        _, report = defense.aggregate(r, me=1, base=base, own=own, own_weight=1.0, others=others)
    assert 20 in report.flagged


def test_momentum_defense_flags_a_noisy_author_every_round() -> None:
    # The noise mostly averages out of the momentum; the round's norm shows it (burst_k).
    rng = np.random.default_rng(9)
    defense = Defense(detection=True, momentum=0.9)
    flagged = 0
    for r in range(1, 16):
        base, others = late_round(rng, 20, set())
        noisy = {c: v + rng.normal(0.0, 2.0, v.shape) for c, v in others[20][1].items()}
        others[20] = (1.0, noisy)
        own = [np.full(d, 0.05) + rng.standard_normal(d) / 3 for d in WIDE]
        _, report = defense.aggregate(r, me=1, base=base, own=own, own_weight=1.0, others=others)
        flagged += 20 in report.flagged
    assert flagged == 15


def test_detection_ignores_integer_counters_through_the_mask() -> None:
    rng = np.random.default_rng(3)
    base, others = honest_round(rng, 12, WIDE)
    for a, (_, v) in others.items():
        v[1][-1] = 400.0 if a in (3, 4) else 25.0  # step counters: more data, more steps
    mask = [np.ones(300, bool), np.arange(200) < 199]
    defense = Defense(detection=True)
    own = [np.ones(d) for d in WIDE]
    _, unmasked = defense.aggregate(1, me=1, base=base, own=own, own_weight=1.0, others=others)
    _, masked = defense.aggregate(
        1, me=1, base=base, own=own, own_weight=1.0, others=others, judge_mask=mask
    )
    assert len(unmasked.flagged) >= 2  # the counter's spread flags honest peers
    assert masked.flagged == []


def _vectors(rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    before = [rng.standard_normal(d) for d in D]
    after = [b + rng.standard_normal(len(b)) for b in before]
    return before, after


@pytest.mark.parametrize(("kind", "factor"), [("sign_flip", -1.0), ("scale", -10.0)])
def test_adversary_reverses_or_scales_its_own_update(kind: str, factor: float) -> None:
    before, after = _vectors(np.random.default_rng(4))
    out = Adversary(kind).craft(before, after)
    for b, a, o in zip(before, after, out, strict=True):
        np.testing.assert_allclose(o - b, factor * (a - b))


def test_seeing_attacks_use_last_rounds_honest_updates_and_are_honest_before() -> None:
    rng = np.random.default_rng(5)
    before, after = _vectors(rng)
    adv = Adversary("ipm", coalition=frozenset({1, 4}), peers=6, ipm_tau=3.0)
    first = adv.craft(before, after)  # nothing seen yet: honest
    for a, o in zip(after, first, strict=True):
        np.testing.assert_allclose(o, a)
    base = [rng.standard_normal(d) for d in D]
    seen = {a: {c: base[c] + rng.standard_normal(D[c]) for c in range(2)} for a in (2, 3, 4, 5)}
    seen[5].pop(1)  # incomplete: not used
    adv.observe(base, seen, 2)
    honest = np.stack([np.concatenate([seen[a][c] - base[c] for c in range(2)]) for a in (2, 3)])
    out = adv.craft(before, after)  # author 4 is an ally: not in the honest sample
    delta = np.concatenate(out) - np.concatenate(before)
    np.testing.assert_allclose(delta, -3.0 * honest.mean(axis=0))


def test_free_rider_publishes_no_change_or_its_stale_model() -> None:
    before, after = _vectors(np.random.default_rng(6))
    assert not Adversary("free_ride").trains
    zero = Adversary("free_ride").craft(before, after)
    for b, o in zip(before, zero, strict=True):
        np.testing.assert_array_equal(o, b)
    stale = Adversary("free_ride", free_ride="stale")
    first = stale.craft(before, after)
    later = stale.craft(after, after)
    for f, o in zip(first, later, strict=True):
        np.testing.assert_array_equal(o, f)


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        (["robust.rule=krum", "robust.f=4"], "robust.rule"),
        (["robust.rule=bulyan", "robust.f=2"], "robust.rule"),
        (["robust.trust.enabled=true"], "robust.trust"),
        (["attack.type=alie"], "attack.type"),
        (["attack.type=ipm", "attack.peers=[9]"], "attack.peers"),
        (["robust.preagg=nnm", "robust.f=4"], "robust.rule"),
    ],
)
def test_config_refuses_impossible_defences_and_attacks(overrides: list[str], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, ["federate.client_num=8", *overrides])
    assert info.value.path == path


def test_config_refuses_a_momentum_of_one_and_a_negative_burst_fence() -> None:
    with pytest.raises(ConfigError, match=r"robust\.detection\.momentum"):
        load_config(None, ["robust.detection.momentum=1.0"])
    with pytest.raises(ConfigError, match=r"robust\.detection\.burst_k"):
        load_config(None, ["robust.detection.burst_k=-1"])
    detection = load_config(None, []).robust.detection
    assert (detection.momentum, detection.burst_k) == (0.9, 3.0)


def test_attackers_are_drawn_once_with_the_seed() -> None:
    config = load_config(None, ["federate.client_num=20", "attack.type=alie", "attack.share=0.2"])
    drawn = config.attack.attackers(20, config.federate.seed)
    assert len(drawn) == 4 and drawn == config.attack.attackers(20, config.federate.seed)
    assert drawn != config.attack.attackers(20, 1)
