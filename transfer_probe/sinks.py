"""Sinks: where probe records and verdicts go besides the training log and the history file.

A sink receives every probe record (the history record dict, see DESIGN.md) and every verdict
(``transfer_probe.diagnose.Verdict`` or its dict) as they are produced. Sinks are named through the
plugin manager, so ``sinks=["jsonl:verdicts.jsonl", "webhook:https://hooks.example/tp"]`` works in
the callback and the CLI::

    from transfer_probe.plugins import create_sink

    sink = create_sink("jsonl:out/events.jsonl")
    sink.on_record({"task": "en-de", "tokens": 1e9, "metrics": {"bleu": 18.4}})
    sink.close()

A sink must never break the training run: the built-in ones log a warning when delivery fails and
carry on. Write your own by subclassing :class:`Sink` and registering it (docs/plugins.md).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from transfer_probe.jsonable import to_json

__all__ = ["Sink", "JsonlSink", "WebhookSink", "to_jsonable"]

logger = logging.getLogger(__name__)


def to_jsonable(obj: Any) -> Any:
    """Turn records and verdicts (dataclasses, objects with ``to_dict``, numpy scalars, paths,
    non-finite floats) into plain JSON values."""
    return to_json(obj)


class Sink:
    """Base class (and interface) of a sink: override the methods you need; all default to no-ops.

    ``on_record(record)`` gets one probe result (a history record dict); ``on_verdict(verdict)``
    gets one diagnosis (a ``Verdict`` or dict; ``to_jsonable`` turns either into JSON values);
    ``close()`` is called once at the end of training.
    """

    def on_record(self, record: dict[str, Any]) -> None:
        pass

    def on_verdict(self, verdict: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _event(kind: str, data: Any) -> dict[str, Any]:
    return {"event": kind, "time": time.time(), "data": to_jsonable(data)}


class JsonlSink(Sink):
    """Appends one JSON line per event, ``{"event": "record"|"verdict", "time": ..., "data": ...}``,
    flushed at once so ``tail -f`` and other readers see it while training runs.

        sink = JsonlSink("out/events.jsonl")
    """

    def __init__(self, path: str | os.PathLike):
        if not str(path).strip():
            raise ValueError("JsonlSink needs a file path, e.g. 'jsonl:out/events.jsonl'")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _write(self, kind: str, data: Any) -> None:
        line = json.dumps(_event(kind, data), ensure_ascii=False)
        with self._lock:
            if self._fh.closed:
                raise ValueError(f"JsonlSink({str(self.path)!r}) is closed")
            self._fh.write(line + "\n")
            self._fh.flush()

    def on_record(self, record: dict[str, Any]) -> None:
        self._write("record", record)

    def on_verdict(self, verdict: Any) -> None:
        self._write("verdict", verdict)

    def close(self) -> None:
        with self._lock:
            if not self._fh.closed:
                self._fh.close()

    def __repr__(self) -> str:
        return f"JsonlSink({str(self.path)!r})"


class WebhookSink(Sink):
    """POSTs each event as JSON (same shape as :class:`JsonlSink` lines) to a URL.

    Delivery failures (timeout, refused connection, HTTP error) are logged as warnings and counted
    in ``failures``; the training run is never interrupted by a webhook.

        sink = WebhookSink("https://hooks.example.com/transfer-probe", timeout=5)
    """

    def __init__(self, url: str, *, timeout: float = 5.0, headers: dict[str, str] | None = None,
                 events: tuple[str, ...] = ("record", "verdict")):
        if not (isinstance(url, str) and url.startswith(("http://", "https://"))):
            raise ValueError(f"WebhookSink needs an http(s) URL, got {url!r}; e.g. 'webhook:https://host/path'")
        self.url = url
        self.timeout = float(timeout)
        self.headers = {"Content-Type": "application/json", "User-Agent": "transfer-probe"}
        self.headers.update(headers or {})
        self.events = tuple(events)
        self.sent = 0
        self.failures = 0

    def _post(self, kind: str, data: Any) -> None:
        if kind not in self.events:
            return
        body = json.dumps(_event(kind, data)).encode()
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                resp.read()
            self.sent += 1
        except (urllib.error.URLError, OSError, ValueError) as e:
            self.failures += 1
            logger.warning("transfer_probe: webhook %s failed for a %s event: %s", self.url, kind, e)

    def on_record(self, record: dict[str, Any]) -> None:
        self._post("record", record)

    def on_verdict(self, verdict: Any) -> None:
        self._post("verdict", verdict)

    def __repr__(self) -> str:
        return f"WebhookSink({self.url!r})"
