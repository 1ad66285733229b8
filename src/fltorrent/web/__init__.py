"""Status from anywhere: JSON, Prometheus metrics, server-sent events and a live dashboard.

The web layer reads a :class:`~fltorrent.web.source.StatusSource` (the in-process federation's
status board, the tracker's member table, a lone peer's board) and serves it
(:mod:`.app`, :mod:`.server`); :mod:`.client` reads a status back (from a run directory or an
HTTP endpoint). It depends on the tracker and on telemetry; the runtime calls it only to start
and stop a server (:func:`fltorrent.runtime.status.watch_run`).
"""
