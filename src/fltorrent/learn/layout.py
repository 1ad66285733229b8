"""Architecture-aware chunk layouts: which elements of a model travel together.

A chunk that arrives is aggregated whole; a chunk that does not keeps the peer's own values. So
the elements that only make sense together should share a chunk: a conv filter, its bias and its
batch-norm entries; an attention head's query, key and value rows and its columns of the output
projection. :func:`model_groups` reads the module tree and returns packing groups
(:mod:`fltorrent.learn.packing`), one per layer:

- ``Conv1d/2d/3d`` and ``Linear``: one slice per output channel (filter or neuron): its weight
  row and bias entry, and, when the next module holding tensors is a batch norm over those
  channels, its weight, bias, running mean and running variance entries (``num_batches_tracked``
  rides along as an extra).
- ``MultiheadAttention`` (packed input projection): one slice per head: the head's rows of Q, K
  and V in ``in_proj_weight`` / ``in_proj_bias`` and its column block of ``out_proj.weight``;
  ``out_proj.bias`` is an extra.
- ``Embedding``, ``LayerNorm`` and a batch norm that follows no conv: all their tensors as one
  slice, never split.
- Anything else (a bare ``nn.Parameter``, unknown modules): one group per tensor, rows along the
  first dimension, as in the default plan.

Groups keep state-dict order (by their first tensor). Both sides build the same plan from the
same model, and the plan digest (in every manifest) checks that they did.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

from fltorrent.learn.chunking import ChunkPlan, TensorSpec, specs_of
from fltorrent.learn.packing import Group, Part, tensor_group

Layout = Literal["auto", "tensor"]
LAYOUTS: tuple[str, ...] = ("auto", "tensor")


def plan_for_model(
    model: nn.Module,
    *,
    num_chunks: int | None = None,
    chunk_bytes: int | None = None,
    layout: Layout = "auto",
) -> ChunkPlan:
    """The chunk plan of ``model``'s state dict: ``auto`` groups by architecture, ``tensor``
    by tensor (the plain layer-aware plan)."""
    state = model.state_dict()
    groups = model_groups(model) if layout == "auto" else None
    return ChunkPlan.from_state_dict(
        state, num_chunks=num_chunks, chunk_bytes=chunk_bytes, groups=groups
    )


def model_groups(model: nn.Module) -> list[Group]:
    """Packing groups for ``model``'s state dict (see the module docstring)."""
    specs = specs_of(model.state_dict())
    index = {s.name: i for i, s in enumerate(specs)}
    holders = [
        (prefix, m)
        for prefix, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
        or any(True for _ in m.buffers(recurse=False))
    ]
    groups: list[Group] = []
    claimed: set[int] = set()

    def local(prefix: str, module: nn.Module) -> dict[str, int]:
        """The module's own tensors present in the state dict: local name -> index."""
        out = {}
        for name in module.state_dict(keep_vars=True):
            if "." in name:
                continue
            full = f"{prefix}.{name}" if prefix else name
            if full in index and index[full] not in claimed:
                out[name] = index[full]
        return out

    def add(group: Group | None) -> None:
        if group is not None:
            groups.append(group)
            claimed.update(group.tensors())

    for pos, (prefix, module) in enumerate(holders):
        own = local(prefix, module)
        if not own:
            continue
        if isinstance(module, nn.MultiheadAttention):
            sub = prefix + ".out_proj" if prefix else "out_proj"
            add(_attention(module, own, _sub(index, claimed, sub), specs))
        elif isinstance(module, (_ConvNd, nn.Linear)) and not _transposed(module):
            follower = holders[pos + 1] if pos + 1 < len(holders) else None
            norm: dict[str, int] = {}
            if follower is not None and _norm_of(follower[1], module):
                norm = local(*follower)
            add(_channels(own, norm, specs))
        elif isinstance(module, (nn.Embedding, nn.LayerNorm, _BatchNorm)):
            add(_whole(own, specs))
    for i, spec in enumerate(specs):
        if spec.numel and i not in claimed:
            groups.append(tensor_group(i, spec))
    groups.sort(key=lambda g: min(g.tensors()))
    return groups


def _sub(index: Mapping[str, int], claimed: set[int], prefix: str) -> dict[str, int]:
    return {
        name.removeprefix(prefix + "."): i
        for name, i in index.items()
        if name.startswith(prefix + ".") and i not in claimed
    }


def _transposed(module: nn.Module) -> bool:
    return bool(getattr(module, "transposed", False))


def _norm_of(module: nn.Module, layer: nn.Module) -> bool:
    """Whether ``module`` is a batch norm over ``layer``'s output channels."""
    if not isinstance(module, _BatchNorm):
        return False
    if isinstance(layer, _ConvNd):
        return bool(module.num_features == layer.out_channels)
    return isinstance(layer, nn.Linear) and module.num_features == layer.out_features


def _nonempty(ids: Mapping[str, int], specs: list[TensorSpec]) -> dict[str, int]:
    return {k: i for k, i in ids.items() if specs[i].numel}


def _channels(
    own: Mapping[str, int], norm: Mapping[str, int], specs: list[TensorSpec]
) -> Group | None:
    """One slice per output channel of a conv / linear layer (and of its batch norm)."""
    own, norm = _nonempty(own, specs), _nonempty(norm, specs)
    weight = own.get("weight")
    if weight is None or not specs[weight].shape:
        return _whole({**own, **norm}, specs)
    n = specs[weight].shape[0]
    parts = [Part(weight, specs[weight].numel // n)]
    extras: list[int] = []
    for i in [*own.values(), *norm.values()]:
        if i == weight:
            continue
        if specs[i].shape == (n,):
            parts.append(Part(i, 1))
        else:
            extras.append(i)  # num_batches_tracked, or anything not per channel
    return Group(tuple(parts), n, tuple(extras))


def _attention(
    module: nn.MultiheadAttention,
    own: Mapping[str, int],
    out: Mapping[str, int],
    specs: list[TensorSpec],
) -> Group | None:
    """One slice per head: its Q/K/V rows and its output-projection columns."""
    own, out = _nonempty(own, specs), _nonempty(out, specs)
    w = own.get("in_proj_weight")
    if w is None or not module._qkv_same_embed_dim:
        return _whole({**own, **{f"out_proj.{k}": i for k, i in out.items()}}, specs)
    e, h = module.embed_dim, module.num_heads
    d = e // h
    parts = [Part(w, d * e, start=k * e * e) for k in range(3)]
    bias = own.get("in_proj_bias")
    if bias is not None:
        parts += [Part(bias, d, start=k * e) for k in range(3)]
    extras = [i for name, i in own.items() if name not in ("in_proj_weight", "in_proj_bias")]
    ow = out.get("weight")
    if ow is not None and specs[ow].shape == (e, e):
        parts.append(Part(ow, d, rows=e, row_stride=e))
    elif ow is not None:
        extras.append(ow)
    extras += [i for name, i in out.items() if name != "weight"]
    return Group(tuple(parts), h, tuple(extras))


def _whole(ids: Mapping[str, int], specs: list[TensorSpec]) -> Group | None:
    """All of a module's tensors as one slice (never split)."""
    ids = _nonempty(ids, specs)
    if not ids:
        return None
    return Group(tuple(Part(i, specs[i].numel) for i in sorted(ids.values())), 1)
