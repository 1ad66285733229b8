"""Checkpoints: what a peer needs to continue a run exactly where a round ended.

One file per peer and round, ``checkpoints/peer-N/round-R.safetensors``: the model's tensors
(``model/<name>``) and every array of the peer's state (``state/<n>``) as safetensors, and the
rest of the state as JSON in the file's metadata. The state is what :class:`PeerState` keeps
across rounds besides the model: the importance scorer's history, the compression error
feedback and its random generator, the defence's random generator, update momentum and trust
scores, an attacker's memory, the device's battery, temperature and clock, FedAvgM's velocity
and SCAFFOLD's control variates; and who sat out which round (the selection weighs it).
Training draws its batches from generators seeded by round, and the optimizer starts afresh
each round, so neither needs saving.

Nothing here unpickles: a checkpoint is tensors and JSON, checked as it is read. Files are
written to a temporary name and renamed, so a crash mid-write leaves the previous checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fltorrent.aggregate.trust import TrustRecord
from fltorrent.errors import FederationError
from fltorrent.learn.compress import ErrorFeedback

if TYPE_CHECKING:
    from fltorrent.runtime.node import PeerState

CHECKPOINT_DIR = "checkpoints"
# What reading a damaged or foreign checkpoint raises (from safetensors, torch, numpy, ours).
_DAMAGE = (
    SafetensorError,
    OSError,
    KeyError,
    TypeError,
    ValueError,
    RuntimeError,
    AttributeError,
    OverflowError,
    RecursionError,
)
KEEP = 3  # checkpoints kept per peer: peers may be a round or two apart when a run stops
VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """Where a peer's checkpoint is and what it says of itself."""

    path: Path
    peer: int
    round: int
    sim_time_s: float | None  # virtual seconds since the federation started (simulation)


def peer_dir(root: Path, peer: int) -> Path:
    """A peer's checkpoint folder under ``root`` (a run directory)."""
    return root / CHECKPOINT_DIR / f"peer-{peer}"


def checkpoint_path(root: Path, peer: int, round_: int) -> Path:
    """Where peer ``peer``'s checkpoint of ``round_`` is under ``root``."""
    return peer_dir(root, peer) / f"round-{round_:06d}.safetensors"


# --- the peer's state as a tree of JSON values and arrays ---------------------------------------


def _rng(gen: np.random.Generator) -> dict[str, Any]:
    return dict(gen.bit_generator.state)


def _set_rng(gen: np.random.Generator, state: dict[str, Any]) -> None:
    gen.bit_generator.state = state


def peer_tree(state: PeerState) -> dict[str, Any]:
    """Everything of ``state`` a round changes, besides the model."""
    scorer = state.learner.scorer
    tree: dict[str, Any] = {
        "scorer": {"history": list(scorer._history), "last_loss": scorer._last_loss},
        "encoder": {
            codec: {
                "residuals": {str(k): v for k, v in fb._residuals.items()},
                "rng": _rng(fb._rng),
            }
            for codec, fb in state.encoder._feedback.items()
        },
        "defense": {
            "rng": _rng(state.defense._rng),
            "momentum": {f"{a},{c}": v for (a, c), v in state.defense._history._avg.items()},
            "trust": None,
        },
        "adversary": None,
        "device": None,
        "server_step": None,
        "scaffold": None,
    }
    trust = state.defense.trust
    if trust is not None:
        tree["defense"]["trust"] = {
            "scores": {str(a): s for a, s in trust._scores.items()},
            "history": [list(record) for record in trust.history],
        }
    adv = state.adversary
    if adv is not None:
        tree["adversary"] = {"rng": _rng(adv._rng), "seen": adv._seen, "last": adv._last}
    dev = state.device
    if dev is not None:
        tree["device"] = {
            "t": dev._t,
            "battery": None if dev.battery is None else [dev.battery._energy, dev.battery._used],
            "thermal": None if dev.thermal is None else dev.thermal._temp,
        }
    if state.server_step is not None:
        tree["server_step"] = {"velocity": state.server_step.velocity}
    if state.scaffold is not None:
        tree["scaffold"] = {"own": state.scaffold.own, "federation": state.scaffold.federation}
    return tree


def load_peer_tree(state: PeerState, tree: dict[str, Any]) -> None:
    """Put ``tree`` (from :func:`peer_tree`) back into a freshly built ``state``."""
    scorer = state.learner.scorer
    scorer._history.clear()
    scorer._history.extend(tree["scorer"]["history"])
    scorer._last_loss = tree["scorer"]["last_loss"]
    enc = state.encoder
    enc._feedback.clear()
    for codec, saved in tree["encoder"].items():
        fb = ErrorFeedback(codec, ratio=enc.topk_ratio, seed=enc.seed)
        fb._residuals = {int(k): v for k, v in saved["residuals"].items()}
        _set_rng(fb._rng, saved["rng"])
        enc._feedback[codec] = fb
    d = tree["defense"]
    _set_rng(state.defense._rng, d["rng"])
    avg = state.defense._history._avg
    avg.clear()
    for key, v in d["momentum"].items():
        a, c = key.split(",")
        avg[int(a), int(c)] = v
    trust = state.defense.trust
    if trust is not None and d["trust"] is not None:
        trust._scores = {int(a): float(s) for a, s in d["trust"]["scores"].items()}
        trust.history = [
            TrustRecord(int(r), int(a), float(s), bool(f)) for r, a, s, f in d["trust"]["history"]
        ]
    adv = state.adversary
    if adv is not None and tree["adversary"] is not None:
        _set_rng(adv._rng, tree["adversary"]["rng"])
        adv._seen, adv._last = tree["adversary"]["seen"], tree["adversary"]["last"]
    dev = state.device
    if dev is not None and tree["device"] is not None:
        saved = tree["device"]
        dev._t = float(saved["t"])
        if dev.battery is not None and saved["battery"] is not None:
            dev.battery._energy, dev.battery._used = (float(x) for x in saved["battery"])
        if dev.thermal is not None and saved["thermal"] is not None:
            dev.thermal._temp = float(saved["thermal"])
    if state.server_step is not None and tree["server_step"] is not None:
        state.server_step.velocity = tree["server_step"]["velocity"]
    if state.scaffold is not None and tree["scaffold"] is not None:
        state.scaffold.own = tree["scaffold"]["own"]
        state.scaffold.federation = tree["scaffold"]["federation"]
    state.resumed_sat_out = {
        int(r): {int(p) for p in peers} for r, peers in tree.get("sat_out", {}).items()
    }


def _pack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, its arrays replaced by references into ``arrays``."""
    if isinstance(value, np.ndarray):
        name = str(len(arrays))
        arrays[name] = value
        return {"@array": name}
    if isinstance(value, dict):
        return {str(k): _pack(v, arrays) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_pack(v, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _unpack(value: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(value, dict):
        if set(value) == {"@array"}:
            return arrays[value["@array"]]
        return {k: _unpack(v, arrays) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v, arrays) for v in value]
    return value


# --- files ------------------------------------------------------------------------------------


def save_checkpoint(
    root: Path,
    state: PeerState,
    *,
    peer: int,
    round_: int,
    sim_time_s: float | None = None,
    keep: int = KEEP,
    sat_out: Mapping[int, Collection[int]] | None = None,
) -> Path:
    """Write peer ``peer``'s checkpoint of the end of ``round_``; keeps the ``keep`` newest."""
    folder = peer_dir(root, peer)
    folder.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    tree = peer_tree(state)
    tree["sat_out"] = {str(r): sorted(p) for r, p in (sat_out or {}).items()}
    skeleton = _pack(tree, arrays)
    tensors = {
        f"model/{k}": v.detach().to("cpu").clone().contiguous()
        for k, v in state.learner.model.state_dict().items()
    }
    for name, arr in arrays.items():
        tensors[f"state/{name}"] = torch.from_numpy(np.ascontiguousarray(arr).copy())
    meta = {
        "version": VERSION,
        "peer": peer,
        "round": round_,
        "sim_time_s": sim_time_s,
        "state": skeleton,
    }
    path = checkpoint_path(root, peer, round_)
    tmp = path.with_suffix(".tmp")
    try:
        save_file(tensors, str(tmp), metadata={"fltorrent": json.dumps(meta)})
    except SafetensorError as exc:  # its I/O errors (a full disk) are not OSError
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise OSError(f"{path}: {exc}") from None
    os.replace(tmp, path)
    for old in sorted(folder.glob("round-*.safetensors"))[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()
    return path


def _meta(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("fltorrent")
    except (SafetensorError, OSError) as exc:
        raise FederationError(f"{path}: not a readable checkpoint ({exc})") from None
    try:
        meta = json.loads(raw or "")
    except (json.JSONDecodeError, RecursionError):
        meta = None
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        raise FederationError(f"{path}: not an fltorrent checkpoint (version {VERSION})")
    return meta


def read_checkpoint(path: Path) -> Checkpoint:
    """What ``path`` says of itself (peer, round, simulated time)."""
    meta = _meta(path)
    peer, round_, sim = meta.get("peer"), meta.get("round"), meta.get("sim_time_s")
    sound_sim = sim is None or (isinstance(sim, int | float) and math.isfinite(sim))
    if type(peer) is not int or type(round_) is not int or round_ < 1 or not sound_sim:
        raise FederationError(f"{path}: a damaged checkpoint (peer, round or time)")
    if path.parts[-2:] != checkpoint_path(path.parent.parent.parent, peer, round_).parts[-2:]:
        raise FederationError(f"{path}: holds peer {peer}'s round {round_}, not what its name says")
    return Checkpoint(path, peer, round_, None if sim is None else float(sim))


def load_checkpoint(path: Path, state: PeerState) -> Checkpoint:
    """Restore ``state`` (freshly built from the same configuration) from ``path``."""
    meta = _meta(path)
    model = state.learner.model
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        weights = {k[6:]: v for k, v in tensors.items() if k.startswith("model/")}
        arrays = {k[6:]: v.numpy() for k, v in tensors.items() if k.startswith("state/")}
        model.load_state_dict(weights, strict=True)
        load_peer_tree(state, _unpack(meta["state"], arrays))
    except _DAMAGE as exc:
        raise FederationError(
            f"{path}: does not fit this peer's model and settings ({type(exc).__name__}: {exc})"
        ) from None
    return read_checkpoint(path)


TREE_KEYS = frozenset(
    {"scorer", "encoder", "defense", "adversary", "device", "server_step", "scaffold", "sat_out"}
)


def verify_checkpoint(path: Path) -> Checkpoint:
    """Read ``path`` whole and check its state's shape (the random generators' states
    included) without a peer to load it into: a resume refuses a damaged checkpoint before
    any peer starts, rather than losing that peer."""
    found = read_checkpoint(path)
    meta = _meta(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            arrays = {k[6:]: f.get_tensor(k).numpy() for k in f.keys() if k.startswith("state/")}  # noqa: SIM118
        tree = _unpack(meta["state"], arrays)
        if not isinstance(tree, dict) or set(tree) | {"sat_out"} != TREE_KEYS:
            raise ValueError("not the state of a peer")
        sat_out = tree.get("sat_out", {})
        if not isinstance(sat_out, dict) or not all(
            k.isdigit() and isinstance(v, list) and all(type(p) is int for p in v)
            for k, v in sat_out.items()
        ):
            raise ValueError("who sat out which round is not a map of rounds to peers")
        rngs = [tree["defense"]["rng"], *(c["rng"] for c in tree["encoder"].values())]
        if tree["adversary"] is not None:
            rngs.append(tree["adversary"]["rng"])
        for state in rngs:
            _set_rng(np.random.default_rng(), state)
        if not all(isinstance(h, np.ndarray) for h in tree["scorer"]["history"]):
            raise ValueError("the importance history is not arrays")
    except _DAMAGE as exc:
        raise FederationError(
            f"{path}: a damaged checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    return found


def latest(root: Path, peer: int) -> list[Path]:
    """A peer's checkpoints under ``root``, oldest first."""
    return sorted(peer_dir(root, peer).glob("round-*.safetensors"))


def common_round(root: Path, peers: Iterable[int]) -> int:
    """The newest round every peer of ``peers`` has a checkpoint of (what a resume starts
    after); :class:`FederationError` when there is none."""
    rounds: dict[int, set[int]] = {}
    for p in peers:
        rounds[p] = {read_checkpoint(path).round for path in latest(root, p)}
    shared = set.intersection(*rounds.values()) if rounds else set()
    if not shared:
        newest = {p: max(r) if r else None for p, r in rounds.items()}
        raise FederationError(
            f"{root}: no round that every peer checkpointed (newest per peer: {newest}); "
            "nothing to resume (a run whose peers stopped at different rounds, e.g. one that "
            "crashed for good, cannot be resumed yet)"
        )
    return max(shared)
