"""Architecture-aware chunk plans: what must travel together does, and every plan round-trips."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest
import torch
from torch import nn

from fltorrent.aggregate.partial import partial_aggregate
from fltorrent.errors import LearnError
from fltorrent.learn.chunking import ChunkPlan
from fltorrent.learn.layout import model_groups, plan_for_model
from fltorrent.learn.models import build_model
from fltorrent.learn.packing import Group, Part, check_groups, default_groups

ZOO = [
    ("mlp", (40,)),
    ("cnn1d", (40,)),
    ("cnn2d", (1, 8, 8)),
    ("resnet", (40,)),
    ("resnet", (1, 8, 8)),
    ("transformer", (40,)),
]


def _owner(plan: ChunkPlan) -> dict[str, np.ndarray]:
    """Per tensor name, the chunk index of each element (flat, C order)."""
    out = {s.name: np.full(s.numel, -1) for s in plan.tensors}
    for chunk in plan.chunks:
        for seg in chunk.segments:
            out[plan.tensors[seg.tensor].name][seg.start : seg.stop] = chunk.index
    return out


def _randomized(model: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    state = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            state[k] = torch.randn(v.shape, generator=g).to(v.dtype)
        else:
            state[k] = torch.randint(0, 1000, v.shape, generator=g).to(v.dtype)
    return state


@pytest.mark.parametrize(("name", "shape"), ZOO)
@pytest.mark.parametrize("size", [{"num_chunks": 1}, {"num_chunks": 20}, {"chunk_bytes": 512}])
def test_every_zoo_plan_round_trips(
    name: str, shape: tuple[int, ...], size: dict[str, Any]
) -> None:
    model = build_model(name, input_shape=shape, num_classes=10, hidden=8)
    plan = plan_for_model(model, **size)
    state = _randomized(model)
    back = plan.join(plan.split(state))
    assert list(back) == list(state)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert torch.equal(back[k], v), k
    again = plan.vectors_to_state(plan.state_to_vectors(state))
    for k, v in state.items():
        assert torch.equal(again[k], v), k
    assert all((o >= 0).all() for o in _owner(plan).values())
    # Both sides of a federation rebuild the same plan from the same architecture.
    twin = build_model(name, input_shape=shape, num_classes=10, hidden=8, seed=5)
    assert plan_for_model(twin, **size).digest() == plan.digest()


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    names = dict(model.named_modules())
    pairs = []
    for n in convs:
        # The zoo registers each conv's batch norm right after it (bn1 after conv1, shortcut.1
        # after shortcut.0).
        bn = n.replace("conv", "bn") if "conv" in n else n[:-1] + "1"
        if isinstance(names.get(bn), nn.modules.batchnorm._BatchNorm):
            pairs.append((n, bn))
    return pairs


@pytest.mark.parametrize("shape", [(40,), (1, 8, 8)])
def test_conv_filters_travel_with_their_bias_and_batch_norm(shape: tuple[int, ...]) -> None:
    model = build_model("resnet", input_shape=shape, num_classes=10, hidden=8)
    plan = plan_for_model(model, chunk_bytes=400)  # small: every conv layer is split
    owner = _owner(plan)
    pairs = _conv_bn_pairs(model)
    assert len(pairs) >= 7  # stem, two per block, two shortcuts
    split = 0
    for conv, bn in pairs:
        w = owner[f"{conv}.weight"]
        out = w.size and cast(torch.Tensor, model.get_submodule(conv).weight).shape[0]
        filters = w.reshape(out, -1)
        assert (filters == filters[:, :1]).all(), f"{conv}: a filter was cut"
        per_filter = filters[:, 0]
        split += len(set(per_filter.tolist())) > 1
        for stat in ("weight", "bias", "running_mean", "running_var"):
            np.testing.assert_array_equal(owner[f"{bn}.{stat}"], per_filter, err_msg=f"{bn}.{stat}")
    assert split >= 5  # the test is about split layers, not layers that fit a chunk anyway


def test_cnn_with_conv_bias_keeps_bias_entries_with_filters() -> None:
    model = build_model("cnn2d", input_shape=(1, 8, 8), num_classes=10, hidden=8)
    owner = _owner(plan_for_model(model, chunk_bytes=300))
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        per_filter = owner[f"{conv}.weight"].reshape(8, -1)[:, 0]
        np.testing.assert_array_equal(owner[f"{conv}.bias"], per_filter)
        np.testing.assert_array_equal(owner[f"{bn}.running_var"], per_filter)


def test_attention_heads_keep_q_k_v_and_output_columns_together() -> None:
    model = build_model("transformer", input_shape=(40,), num_classes=10, hidden=16)
    plan = plan_for_model(model, chunk_bytes=1)  # smallest: one head per chunk
    owner = _owner(plan)
    attn = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    assert len(attn) == 2
    for name, m in attn:
        e, h = m.embed_dim, m.num_heads
        d = e // h
        w = owner[f"{name}.in_proj_weight"].reshape(3 * e, e)
        b = owner[f"{name}.in_proj_bias"]
        out = owner[f"{name}.out_proj.weight"].reshape(e, e)
        heads = set()
        for k in range(h):
            rows = slice(k * d, (k + 1) * d)
            q, kk, v = (
                w[rows],
                w[e + k * d : e + (k + 1) * d],
                w[2 * e + k * d : 2 * e + (k + 1) * d],
            )
            cid = q.flat[0]
            for part in (q, kk, v, b[rows], b[e:][rows], b[2 * e :][rows], out[:, rows]):
                assert (part == cid).all(), f"{name} head {k}"
            heads.add(int(cid))
        assert len(heads) == h  # one chunk per head at this size
    for name, m in model.named_modules():
        if isinstance(m, (nn.LayerNorm, nn.Embedding)):
            ids = {int(x) for p in m.state_dict() for x in owner[f"{name}.{p}"]}
            assert len(ids) == 1, f"{name} was split"


def test_linear_neurons_keep_their_bias() -> None:
    model = build_model("mlp", input_shape=(40,), num_classes=10, hidden=8)
    owner = _owner(plan_for_model(model, chunk_bytes=500))
    rows = owner["fc1.weight"].reshape(32, 40)
    assert (rows == rows[:, :1]).all()
    np.testing.assert_array_equal(owner["fc1.bias"], rows[:, 0])
    assert len(set(rows[:, 0].tolist())) > 1


def test_tensor_layout_is_the_plain_plan() -> None:
    model = build_model("cnn2d", input_shape=(1, 8, 8), num_classes=10)
    plain = ChunkPlan.from_state_dict(model.state_dict(), num_chunks=20)
    assert plan_for_model(model, num_chunks=20, layout="tensor") == plain
    assert plan_for_model(model, num_chunks=20) != plain


def test_unknown_modules_and_bare_parameters_fall_back_to_rows() -> None:
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(6, 4))
            self.gru = nn.GRU(4, 3)

    model = Odd()
    groups = model_groups(model)
    specs = ChunkPlan.from_state_dict(model.state_dict(), num_chunks=1).tensors
    assert groups == default_groups(specs)


def test_groups_that_miss_or_overrun_elements_are_refused() -> None:
    specs = ChunkPlan.from_state_dict({"a": torch.zeros(4, 3)}, num_chunks=1).tensors
    with pytest.raises(LearnError, match="cover 6 of its 12"):
        check_groups(specs, [Group((Part(0, 3),), 2)])
    with pytest.raises(LearnError, match="outside"):
        check_groups(specs, [Group((Part(0, 3, start=3),), 4)])
    with pytest.raises(LearnError, match="refers to tensor 3"):
        check_groups(specs, [Group((Part(0, 3),), 4, extras=(3,))])
    with pytest.raises(LearnError, match="cover 24"):
        check_groups(specs, [Group((Part(0, 3),), 4), Group((Part(0, 12),), 1)])


@pytest.mark.parametrize(("name", "shape"), [("resnet", (40,)), ("transformer", (40,))])
def test_partial_aggregation_is_per_coordinate_on_architecture_plans(
    name: str, shape: tuple[int, ...]
) -> None:
    """Each element averages the authors whose chunk holding it arrived (weights renormalized
    over them); an element nobody delivered keeps the peer's own value."""
    model = build_model(name, input_shape=shape, num_classes=10, hidden=8)
    plan = plan_for_model(model, num_chunks=12)
    rng = np.random.default_rng(3)
    states = [
        {k: torch.randn(v.shape, dtype=torch.float64) for k, v in model.state_dict().items()}
        for _ in range(4)
    ]
    specs = plan.tensors
    for s in states:  # the integer buffer must stay an integer
        for spec in specs:
            if not spec.dtype.is_floating_point:
                s[spec.name] = torch.tensor(int(rng.integers(0, 100)), dtype=spec.dtype)
            else:
                s[spec.name] = s[spec.name].to(spec.dtype)
    own, others = states[0], states[1:]
    weights = [3.0, 1.0, 2.0, 5.0]  # own first
    delivered = rng.random((3, plan.num_chunks)) < 0.5
    delivered[:, 0] = False  # chunk 0 reaches nobody
    own_v = plan.state_to_vectors(own)
    other_v = [plan.state_to_vectors(s) for s in others]
    received = [
        [(own_v[c], weights[0])]
        + [(other_v[a][c], weights[a + 1]) for a in range(3) if delivered[a, c]]
        for c in range(plan.num_chunks)
    ]
    received[0] = []  # and the peer itself sat the round out for chunk 0's sake
    got = plan.vectors_to_state(partial_aggregate(own_v, received))
    owner = _owner(plan)
    for spec in specs:
        if not spec.dtype.is_floating_point:
            continue
        chunk_of = owner[spec.name]
        mine = own[spec.name].reshape(-1).double().numpy()
        num = weights[0] * mine
        den = np.full(spec.numel, weights[0])
        for a in range(3):
            mask = delivered[a, chunk_of]
            num = num + np.where(mask, weights[a + 1] * others[a][spec.name].reshape(-1).numpy(), 0)
            den = den + np.where(mask, weights[a + 1], 0.0)
        want = np.where(chunk_of == 0, mine, num / den)
        np.testing.assert_allclose(
            got[spec.name].reshape(-1).double().numpy(), want, rtol=1e-5, atol=1e-6
        )
