"""Typed metric events, the JSONL sink, the progress display and the run summary."""

from fltorrent.telemetry.events import RoundMetrics
from fltorrent.telemetry.sink import JsonlSink, read_metrics
from fltorrent.telemetry.summary import summarize

__all__ = ["JsonlSink", "RoundMetrics", "read_metrics", "summarize"]
