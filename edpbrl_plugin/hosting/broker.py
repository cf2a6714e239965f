"""Questions a running graph is waiting on, and the answers that release them.

A blocking "Ask" step registers its question here and waits; whoever answers (the browser widget,
a script through the HTTP route, another thread) commits the answer to the store first and then
delivers it here. Waiting happens in short slices so an interrupt check can end it at any time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Waiting:
    query: int
    session: str
    node: str | None
    info: dict = field(default_factory=dict)
    event: threading.Event = field(default_factory=threading.Event)
    answer: object = None


class AnswerBroker:
    def __init__(self):
        self._waiting: dict[int, Waiting] = {}
        self._lock = threading.Lock()

    def register(self, query: int, session: str, node: str | None = None, info: dict | None = None) -> Waiting:
        with self._lock:
            entry = Waiting(int(query), session, node, dict(info or {}))
            self._waiting[entry.query] = entry
            return entry

    def deliver(self, query: int, answer) -> bool:
        """Release a waiter with its (already stored) answer; False when nobody waits on ``query``."""
        with self._lock:
            entry = self._waiting.get(int(query))
        if entry is None:
            return False
        entry.answer = answer
        entry.event.set()
        return True

    def wait(
        self,
        entry: Waiting,
        timeout: float | None = None,
        check: Callable[[], None] | None = None,
        poll: Callable[[], object] | None = None,
        slice_seconds: float = 0.1,
    ):
        """Block until answered (returns the answer), ``timeout`` passes (returns None) or ``check`` raises.

        ``poll`` is asked now and then for an answer that arrived another way (another process wrote it).
        """
        deadline = None if not timeout else time.monotonic() + timeout
        last_poll = 0.0
        try:
            while not entry.event.wait(slice_seconds):
                if check is not None:
                    check()
                now = time.monotonic()
                if poll is not None and now - last_poll > 1.0:
                    last_poll = now
                    found = poll()
                    if found is not None:
                        return found
                if deadline is not None and now >= deadline:
                    return None
            return entry.answer
        finally:
            with self._lock:
                self._waiting.pop(entry.query, None)

    def waiting(self) -> list[Waiting]:
        with self._lock:
            return list(self._waiting.values())


#: The one broker of this process (ComfyUI's nodes and its HTTP route share it).
BROKER = AnswerBroker()
