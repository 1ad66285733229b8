"""A Byzantine peer's swarm, for experiments: the same protocol, used to lie.

* ``poison``: every block it serves has its bytes inverted. Receivers hash the piece, reject
  it, never serve it onward, and drop the sender after ``max_corrupt`` bad pieces
  (``Downloader._corrupt``): chunk poisoning costs the attacker its connections.
* :meth:`AdversarialSwarm.publish_to`: a blob announced only to the neighbours an
  ``audience`` predicate admits (and to nobody else, even when they connect later). Publishing
  two different updates for one round to two halves of the neighbours is *equivocation*;
  neighbours relay both manifests, and peers that end up holding two blobs of one author and
  round ignore both (``Peer._round_blobs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fltorrent.swarm.manifest import Manifest
from fltorrent.swarm.session import Session
from fltorrent.swarm.store import Blob, Buffer
from fltorrent.swarm.swarm import Swarm
from fltorrent.wire import Request

_INVERT = bytes(range(255, -1, -1))


class AdversarialSwarm(Swarm):
    """A :class:`Swarm` that may poison what it serves and equivocate what it announces."""

    def __init__(self, *args: Any, poison: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.poison = poison
        self._audience: dict[bytes, Callable[[int], bool]] = {}

    def read_block(self, session: Session, req: Request) -> Buffer | None:
        data = super().read_block(session, req)
        if data is None or not self.poison:
            return data
        return bytes(data).translate(_INVERT)

    def publish_to(
        self, manifest: Manifest, pieces: list[bytes], audience: Callable[[int], bool]
    ) -> Blob:
        """Publish a blob announced only to neighbours ``audience(peer id)`` admits."""
        self._audience[manifest.blob_id] = audience
        return self.publish(manifest, pieces, verify=False)

    def _announce(self, session: Session, blob: Blob) -> None:
        audience = self._audience.get(blob.blob_id)
        if audience is None or audience(session.remote_id):
            super()._announce(session, blob)
