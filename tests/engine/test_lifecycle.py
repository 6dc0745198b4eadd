"""Apps their user never closes: the script still ends, nothing acknowledged is lost,
and an async app left open is released with one ResourceWarning.

Each case runs a script in a fresh interpreter (``-X dev``), because what is
tested is how that interpreter ends.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.process_support import run_python

APP = """
import sys
from statelog import ApplicationBuilder, State, action, default

@action(reads=["n"], writes=["n"])
def inc(state: State) -> State:
    return state.update(n=state["n"] + 1)

def builder(app_id, db, durability="transactional"):
    return (
        ApplicationBuilder()
        .with_actions(inc=inc)
        .with_transitions(("inc", "inc", default))
        .with_identifiers(app_id=app_id)
        .with_store(db)
        .with_durability(durability)
    )
"""


def run_script(tmp_path: Path, body: str, *args: str, warnings: str = "default") -> tuple[str, str]:
    script = tmp_path / "script.py"
    script.write_text(APP + textwrap.dedent(body))
    done = run_python(script, *args, flags=("-X", "dev", "-W", warnings))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout, done.stderr


@pytest.mark.parametrize("durability", ["transactional", "fire_and_forget"])
def test_sync_app_never_closed_exits_and_keeps_every_step(tmp_path: Path, durability: str) -> None:
    out, _ = run_script(
        tmp_path,
        """
        app = builder("counter", sys.argv[1], sys.argv[2]).with_state(n=0)
        app = app.with_entrypoint("inc").build()
        for _ in range(5):
            app.run(halt_after=["inc"])
        print(app.sequence_id, app.state["n"])
        # no app.close(): the script just ends
        """,
        "app.db",
        durability,
    )
    acknowledged = out.split()
    # each run: run_started, the step, halted
    assert acknowledged == ["15", "5"]

    out, _ = run_script(
        tmp_path,
        """
        app = builder("counter", sys.argv[1]).initialize_from(
            default_state={"n": 0}, default_entrypoint="inc"
        ).build()
        print(app.sequence_id, app.state["n"])
        app.close()
        """,
        "app.db",
    )
    assert out.split() == acknowledged


def test_async_apps_left_open_are_released_with_one_warning_each(tmp_path: Path) -> None:
    _, err = run_script(
        tmp_path,
        """
        import asyncio, gc, threading

        KEPT = []

        async def main():
            dropped = []
            for i in range(20):
                app = builder(f"app{i}", "app.db").with_state(n=0).with_entrypoint("inc")
                app = await app.abuild()
                await app.arun(halt_after=["inc"])
                (dropped if i % 2 else KEPT).append(app)
            dropped.clear()  # collected while the loop runs
            gc.collect()
            # KEPT outlives the loop

        base = threading.active_count()
        asyncio.run(main())
        KEPT.clear()
        gc.collect()
        extra = threading.active_count() - base
        print("extra threads", extra)
        assert extra == 0, threading.enumerate()
        """,
        warnings="always",
    )
    unclosed = [line for line in err.splitlines() if "ResourceWarning" in line]
    assert len(unclosed) == 20, err
    assert all("unclosed Application(app_id='app" in line for line in unclosed), err
    assert sorted(line.split("app_id='")[1].split("'")[0] for line in unclosed) == sorted(
        f"app{i}" for i in range(20)
    )


def test_a_closed_async_app_warns_nothing(tmp_path: Path) -> None:
    _, err = run_script(
        tmp_path,
        """
        import asyncio, gc

        async def main():
            app = await builder("a", "app.db").with_state(n=0).with_entrypoint("inc").abuild()
            async with app:
                await app.arun(halt_after=["inc"])
            del app
            gc.collect()

        asyncio.run(main())
        """,
        warnings="always",
    )
    assert "Warning" not in err, err


def test_ctrl_c_while_a_sync_calls_task_is_made_never_starts_it(tmp_path: Path) -> None:
    """A SIGINT that lands while ``run_sync`` makes the call's task (a busy machine can
    deliver a Ctrl-C anywhere): the call raises KeyboardInterrupt and the task never
    runs. Before, the handler went in after the task was made: the default one raised
    out of the call and left the task pending, to run at the app's next call."""
    out, _ = run_script(
        tmp_path,
        """
        import asyncio, os, signal
        from statelog.engine._lifecycle import run_sync

        ran = []

        async def call():
            ran.append("the call ran")

        def late_signal(loop, coro, **kwargs):
            task = asyncio.Task(coro, loop=loop, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)  # its handler runs before this returns
            return task

        with asyncio.Runner() as runner:
            loop = runner.get_loop()
            loop.set_task_factory(late_signal)
            try:
                run_sync(runner, call())
            except KeyboardInterrupt:
                print("interrupted")
            loop.set_task_factory(None)
            print("pending", len(asyncio.all_tasks(loop)))
            run_sync(runner, asyncio.sleep(0))  # the next call on the loop
            print("ran", ran)
            print("handler back", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        """,
    )
    assert out.splitlines() == ["interrupted", "pending 0", "ran []", "handler back True"]


def test_ctrl_c_during_a_sync_step_cancels_it_and_the_app_still_closes(tmp_path: Path) -> None:
    """The sync face's own Ctrl-C handling (``run_sync``, as ``asyncio.Runner.run``):
    the first SIGINT cancels the step at its next await and the call raises
    KeyboardInterrupt; the handler is put back; the app closes at once (a step left
    running on the app's loop would make ``close()`` wait for its 30 s sleep)."""
    out, _ = run_script(
        tmp_path,
        """
        import asyncio, os, signal, threading
        from statelog import ApplicationBuilder

        @action(reads=["n"], writes=["n"])
        async def slow(state: State) -> State:
            await asyncio.sleep(30)
            return state.update(n=state["n"] + 1)

        app = (
            ApplicationBuilder()
            .with_actions(inc=inc, slow=slow)
            .with_transitions(("inc", "slow"), ("slow", "inc"))
            .with_identifiers(app_id="ctrl-c")
            .with_store(sys.argv[1])
            .with_state(n=0)
            .with_entrypoint("inc")
            .build()
        )
        app.step()
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            app.step()  # the action sleeps 30 s: only the cancel ends it within the 10 s
        except KeyboardInterrupt:
            print("interrupted")
        print("handler back", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        print("state", app.state["n"], app.sequence_id)
        app.close()
        """,
        "app.db",
    )
    lines = out.splitlines()
    assert lines[0] == "interrupted"
    assert lines[1] == "handler back True"
    assert lines[2].startswith("state 1 ")
