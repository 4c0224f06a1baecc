"""Blocking calls (model lists, DyNA status and deploy, a connection test, the first torch import)
run on worker threads; their results are handed to callbacks on the thread that calls :meth:`drain`
(the GUI timer), so a panel never waits for a server or an import.

    calls = BackgroundCalls()
    calls.submit(lambda: backend.list_models(), on_done=fill_combo, on_error=show_error)
    ...                         # a QTimer calls calls.drain() every 100 ms
"""
from __future__ import annotations

import queue
import threading
from typing import Callable


class BackgroundCalls:
    def __init__(self):
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.pending = 0  # submitted, callback not run yet
        self._closed = False

    def submit(self, fn: Callable[[], object], on_done: Callable[[object], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None, name: str = "call") -> None:
        """Run ``fn()`` on a new daemon thread; ``on_done(result)`` or ``on_error(exception)`` run
        later, inside :meth:`drain`."""
        self.pending += 1

        def work():
            try:
                out = (on_done, fn())
            except BaseException as e:  # noqa: BLE001 - handed to on_error on the GUI thread
                out = (on_error, e)
            self._queue.put(out)

        threading.Thread(target=work, name=f"MedSegSuite {name}", daemon=True).start()

    def drain(self) -> int:
        """Run the callbacks of the calls that finished; returns how many are still pending."""
        while True:
            try:
                callback, value = self._queue.get_nowait()
            except queue.Empty:
                return self.pending
            self.pending -= 1
            if self._closed:
                continue
            if callback is not None:
                callback(value)
            elif isinstance(value, BaseException):
                print(f"MedSegSuite: background call failed: {value}")

    def close(self) -> None:
        """Drop the callbacks of calls still running (the panel is going away)."""
        self._closed = True

    def wait(self, timeout: float = 30.0, interval: float = 0.01) -> None:
        """Drain until nothing is pending (tests, batch scripts)."""
        import time

        deadline = time.time() + timeout
        while self.drain() and time.time() < deadline:
            time.sleep(interval)
