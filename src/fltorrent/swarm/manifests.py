"""Fetching manifests: one request per wanted blob at a time, verified against its blob id.

A neighbour's ``ANNOUNCE`` names a blob; if it is wanted and unknown, its manifest is requested
from one neighbour that announced it. If that neighbour leaves or does not answer within the
request timeout, the next one is asked. An answer must hash to the announced id, decode, and
agree with the announce hints; anything else is the sender's protocol error.

When the swarm verifies signatures (``verify``), the answer must also carry its author's
signature over the blob id, checked before any piece is requested: a bad signature (a manifest
naming another author, or altered) is the sender's protocol error, since an honest relay
passes on only manifests it verified; an author whose key we do not know yet is refused
without blame. A manifest that is an earlier round's, announced as a later one, is a replay.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from fltorrent.errors import ManifestError, RemoteProtocolError
from fltorrent.swarm.counters import Counters
from fltorrent.swarm.guard import ManifestVerify, SecurityHook
from fltorrent.swarm.manifest import Manifest, sha256
from fltorrent.swarm.session import Session
from fltorrent.wire import ManifestData, ManifestRequest

log = logging.getLogger(__name__)

ManifestCheck = Callable[[Manifest], str | None]


@dataclass
class _Wait:
    session: Session
    since: float
    tried: set[int] = field(default_factory=set)


class ManifestFetcher:
    """Outstanding manifest requests of one swarm."""

    def __init__(
        self,
        *,
        peer_id: int,
        announcers: Callable[[bytes], Iterable[Session]],
        known: Callable[[bytes], bool],
        clock: Callable[[], float],
        max_piece_size: int,
        check: ManifestCheck | None = None,
        verify: ManifestVerify | None = None,
        counters: Counters | None = None,
        on_security: SecurityHook | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.max_piece_size = max_piece_size
        self.announcers = announcers  # the open sessions that announced a blob, in order
        self.known = known
        self.now = clock
        self.check = check
        self.verify = verify
        self.counters = counters or Counters()
        self.on_security = on_security
        self._waits: dict[bytes, _Wait] = {}

    def fetch(self, blob_id: bytes, exclude: Iterable[int] = ()) -> None:
        """Ask one neighbour that announced ``blob_id`` (and was not tried) for its manifest."""
        if blob_id in self._waits or self.known(blob_id):
            return
        tried = set(exclude)
        for session in self.announcers(blob_id):
            if session.remote_id not in tried:
                handle = session.their_handle[blob_id]
                tried.add(session.remote_id)
                self._waits[blob_id] = _Wait(session, self.now(), tried)
                session.send(ManifestRequest(handle))
                return

    def receive(self, session: Session, msg: ManifestData, *, wanted: bool) -> Manifest | None:
        """Check an answer; returns the manifest to add, or ``None`` (unwanted or refused)."""
        rb = session.their[msg.handle]
        if sha256(msg.body) != rb.blob_id:
            raise RemoteProtocolError("manifest does not hash to its announced blob id")
        wait = self._waits.pop(rb.blob_id, None)
        if self.known(rb.blob_id) or not wanted:
            return None
        try:
            manifest = Manifest.decode(msg.body)
        except ManifestError as exc:
            raise RemoteProtocolError(f"bad manifest: {exc}") from exc
        hints = (rb.round, rb.author, len(rb.bits), rb.topic)
        if (manifest.round, manifest.author, manifest.num_pieces, manifest.topic) != hints:
            if manifest.round < rb.round and manifest.author == rb.author:
                self.counters.replayed_manifests += 1
                self._audit("replay", session, f"round {manifest.round} announced as {rb.round}")
                raise RemoteProtocolError("replayed manifest: an earlier round's, announced anew")
            raise RemoteProtocolError("manifest contradicts its announce")
        refusal = self._unverified(session, manifest, rb.blob_id, msg.signature)
        if refusal is None and max(manifest.piece_sizes) > self.max_piece_size:
            # A block of such a piece would make us allocate the whole piece.
            refusal = f"a piece of {max(manifest.piece_sizes)} bytes (limit {self.max_piece_size})"
        if refusal is None and self.check is not None:
            refusal = self.check(manifest)
        if refusal is not None:
            log.warning(
                "peer %d: manifest of author %d round %d refused: %s",
                self.peer_id,
                manifest.author,
                manifest.round,
                refusal,
            )
            if wait is not None:  # keep the wait so that we do not fetch it again
                self._waits[rb.blob_id] = wait
            return None
        return manifest

    def _unverified(
        self, session: Session, manifest: Manifest, blob_id: bytes, signature: bytes
    ) -> str | None:
        """Why the author's signature cannot be accepted yet (``None``: it holds, or the swarm
        verifies nothing); raises if it is bad, which closes the sender's session."""
        if self.verify is None:
            return None
        problem = self.verify(manifest.author, blob_id, signature)
        if problem == "bad_signature":
            self.counters.bad_signatures += 1
            self._audit("bad_signature", session, f"manifest of author {manifest.author}")
            raise RemoteProtocolError(
                f"manifest of author {manifest.author} round {manifest.round} is not signed "
                "by its author"
            )
        return problem

    def _audit(self, kind: str, session: Session, reason: str) -> None:
        if self.on_security is not None:
            self.on_security(kind, session.remote_id, reason)

    def session_closed(self, session: Session) -> None:
        """Re-ask elsewhere what ``session`` was asked."""
        for blob_id, wait in list(self._waits.items()):
            if wait.session is session:
                del self._waits[blob_id]
                self.fetch(blob_id, exclude=wait.tried)

    def expire(self, timeout: float) -> None:
        """Re-ask elsewhere what was not answered within ``timeout`` seconds."""
        now = self.now()
        for blob_id, wait in list(self._waits.items()):
            if now - wait.since > timeout:
                del self._waits[blob_id]
                self.fetch(blob_id, exclude=wait.tried)
