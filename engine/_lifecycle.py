"""Who closes an application its user never closed.

An application owns a writer and, when ``with_store`` was given a path, the
stores it opened on that file. ``aclose()`` / ``close()`` release them. When
the user does not call it:

* An app made by ``build()`` (the sync face) owns its ``asyncio.Runner``.
  Building, running and letting the script end is the normal Burr habit, so the
  sync face releases itself, quietly: when the app is garbage-collected, and at
  interpreter exit *before* Python waits for non-daemon threads (a store's
  worker thread would otherwise keep the process alive for ever). Releasing
  flushes pending events first; a transactional step was committed before it
  returned anyway.
* An app made by ``abuild()`` lives in its caller's event loop. Left open, it
  is released with one ``ResourceWarning``: when it is garbage-collected while
  its loop still runs (a task on that loop), or when the loop shuts down first
  (``asyncio.run`` finalises async generators before it closes the loop; one
  watch per loop is such a generator). Either way the stores close on their
  loop: their threads end and no callback reaches a closed loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import warnings
import weakref
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any, TypeVar

from ._durability import Writer

try:  # the C functions behind ``signal``: no enum wrapping of the handlers
    # (same-run A/B: sync step 52 -> 35 us in memory)
    import _signal as _raw_signal  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - an interpreter without it
    _raw_signal = signal

__all__ = ["Lifeline", "run_sync", "watch_async", "watch_sync"]

logger = logging.getLogger("statelog.engine")

T = TypeVar("T")


class Lifeline:
    """What an application must release, kept apart from the application itself
    so that a finaliser can release it after the application is gone."""

    __slots__ = ("__weakref__", "label", "open", "owned", "watch", "writer")

    def __init__(self, label: str, writer: Writer, owned: list[Any]) -> None:
        self.label = label
        self.writer: Writer | None = writer
        self.owned = owned
        self.open = True  # False once the app closed or was given up
        self.watch: _LoopWatch | None = None

    async def release(self) -> None:
        """Close the writer (it flushes), then the owned stores, newest first.

        A resource whose close was cancelled stays listed, so a later release
        (the loop's watch) closes it.
        """
        self.open = False
        writer, self.writer = self.writer, None
        try:
            if writer is not None:
                await writer.aclose()
        finally:
            while self.owned:
                resource = self.owned.pop()
                try:
                    await resource.aclose()
                except asyncio.CancelledError:
                    self.owned.append(resource)
                    raise
            if self.watch is not None:
                self.watch.lives.discard(self)

    async def release_quietly(self) -> None:
        """``release`` for an app nobody will hear from again: failures are logged."""
        try:
            await self.release()
        except Exception:
            logger.exception("releasing unclosed %s failed", self.label)


# --------------------------------------------------------------- apps made by build()

_sync_finalizers: set[weakref.finalize[Any, Any]] = set()
_exit_hook_lock = threading.Lock()
_exit_hook_registered = False


def watch_sync(app: object, runner: asyncio.Runner, life: Lifeline) -> Callable[[], None]:
    """Release ``life`` and close ``runner`` when ``app`` is collected or the
    interpreter exits; the returned function forgets that (``close()`` calls it)."""
    _register_exit_hook()
    fin = weakref.finalize(app, _release_sync, runner, life)
    fin.atexit = False  # our exit hook runs it, before non-daemon threads are joined
    _sync_finalizers.add(fin)

    def forget() -> None:
        fin.detach()
        _sync_finalizers.discard(fin)

    return forget


def _release_sync(runner: asyncio.Runner, life: Lifeline) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:  # collected inside some running loop: its runner cannot run here
        if life.open:
            warnings.warn(
                f"unclosed {life.label} was collected inside a running event loop and "
                "could not be closed; call app.close()",
                ResourceWarning,
                stacklevel=2,
            )
        return
    try:
        if life.open or life.owned:
            runner.run(life.release_quietly())
    finally:
        runner.close()


def _release_sync_apps_at_exit() -> None:
    for fin in list(_sync_finalizers):
        _sync_finalizers.discard(fin)
        fin()


def _register_exit_hook() -> None:
    global _exit_hook_registered
    with _exit_hook_lock:
        if _exit_hook_registered:
            return
        # threading's exit hooks run before the interpreter joins non-daemon
        # threads (concurrent.futures uses the same hook); atexit runs after.
        register = getattr(threading, "_register_atexit", None)
        if register is None:  # pragma: no cover - CPython has had it since 3.9
            import atexit

            atexit.register(_release_sync_apps_at_exit)
        else:
            register(_release_sync_apps_at_exit)
        _exit_hook_registered = True


# --------------------------------------------------------------- apps made by abuild()


class _LoopWatch:
    """The unreleased apps of one event loop, released if the loop shuts down first."""

    __slots__ = ("closing", "gen", "lives", "loop_gone")

    def __init__(self) -> None:
        self.lives: set[Lifeline] = set()
        self.closing: set[asyncio.Task[None]] = set()
        self.gen: AsyncGenerator[None, None] | None = None
        self.loop_gone = False

    def release_later(self, life: Lifeline) -> None:
        """On the loop's thread: release an app that was collected open."""
        task = asyncio.get_running_loop().create_task(life.release_quietly())
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    async def at_loop_end(self) -> None:
        # Releases that were cancelled by the loop's shutdown left resources listed.
        for task in list(self.closing):
            if not task.done():
                await asyncio.wait([task])
        for life in list(self.lives):
            if life.open:
                warnings.warn(
                    f"unclosed {life.label} at the end of its event loop; "
                    "close it with `await app.aclose()` or `async with app:`",
                    ResourceWarning,
                    stacklevel=1,
                )
            await life.release_quietly()


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWatch] = (
    weakref.WeakKeyDictionary()
)


async def _watch_loop(watch: _LoopWatch) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        if not watch.loop_gone:
            await watch.at_loop_end()


def _forget_loop(watch: _LoopWatch) -> None:
    """The loop is gone without finalising its async generators: end the watch
    without awaiting, so nothing is ever scheduled on a closed loop."""
    watch.loop_gone = True
    gen, watch.gen = watch.gen, None
    if gen is not None:
        with contextlib.suppress(StopIteration, RuntimeError):
            gen.aclose().send(None)


async def watch_async(app: object, life: Lifeline) -> None:
    """Release ``life`` (with a ResourceWarning) if ``app`` is collected open or
    its loop shuts down first. Call it in the app's loop."""
    loop = asyncio.get_running_loop()
    watch = _watches.get(loop)
    if watch is None:
        watch = _LoopWatch()
        gen = _watch_loop(watch)
        await gen.asend(None)  # first iteration: the loop now finalises it at shutdown
        watch.gen = gen
        _watches[loop] = watch
        weakref.finalize(loop, _forget_loop, watch).atexit = False
    life.watch = watch
    watch.lives.add(life)
    weakref.finalize(app, _abandon_async, life, weakref.ref(loop)).atexit = False


def _abandon_async(life: Lifeline, loop_ref: weakref.ref[asyncio.AbstractEventLoop]) -> None:
    if not life.open:
        return
    life.open = False
    warnings.warn(
        f"unclosed {life.label}; close it with `await app.aclose()` or `async with app:`",
        ResourceWarning,
        stacklevel=2,
    )
    loop = loop_ref()
    watch = life.watch
    if loop is None or loop.is_closed() or watch is None:
        return  # nothing can be awaited any more
    with contextlib.suppress(RuntimeError):  # the loop closed in the meantime
        loop.call_soon_threadsafe(watch.release_later, life)


class _Interrupt:
    """The SIGINT handler of one sync call: the first Ctrl-C cancels its task
    (which then stops at its next await), a second one raises at once: what
    ``asyncio.Runner.run`` does, with a handler whose ``repr`` is cheap."""

    __slots__ = ("count", "loop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.task: asyncio.Task[Any] | None = None  # set once the call's task exists
        self.count = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            if self.task is None:  # the task is being made: run_sync cancels it then
                return
            if not self.task.done():
                self.task.cancel()
                self.loop.call_soon_threadsafe(_nothing)  # wake a loop blocked in select()
                return
        raise KeyboardInterrupt()

    def __repr__(self) -> str:
        return "<statelog sync call's SIGINT handler>"


def _nothing() -> None:
    pass


def run_sync(runner: asyncio.Runner, coro: Coroutine[Any, Any, T]) -> T:
    """``runner.run(coro)`` for the sync face's calls, with the same Ctrl-C handling.

    On Python 3.11 ``signal.signal`` reprs the handler it replaces (an enum
    lookup that fails), and ``Runner.run``'s handler is a partial holding the
    task, whose repr walks the coroutine and the app's state: ~20-40 us of a
    sync step that takes ~10 us of work (same-run A/B: docs/benchmarks.md).
    This is ``Runner.run`` with a handler whose repr costs nothing.
    """
    loop = runner.get_loop()
    # The handler goes in before the task is made (Runner.run makes the task first): a
    # Ctrl-C in between would raise out of here and leave the task to run at the next
    # call on this loop (a step running on behind the KeyboardInterrupt).
    handler: _Interrupt | None = None
    if (
        threading.current_thread() is threading.main_thread()
        and _raw_signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        handler = _Interrupt(loop)
        try:
            _raw_signal.signal(signal.SIGINT, handler)
        except ValueError:  # the main thread takes no signals (an embedded interpreter)
            handler = None
    try:
        # the runner's one context, as Runner.run uses: what a call sets, the next one sees
        task = loop.create_task(coro, context=getattr(runner, "_context", None))
        if handler is not None:
            handler.task = task
            if handler.count:  # Ctrl-C while the task was being made: it never starts
                task.cancel()
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        if handler is not None and handler.count > 0 and task.uncancel() == 0:
            raise KeyboardInterrupt() from None
        raise
    finally:
        if handler is not None and _raw_signal.getsignal(signal.SIGINT) is handler:
            _raw_signal.signal(signal.SIGINT, signal.default_int_handler)
