"""Where the time of one figure goes, for one system: cProfile, top functions.

    python bench/profile_figure.py statelog durable_normal 3000
    python bench/profile_figure.py burr mem 9000
    python bench/profile_figure.py eventsourcing rebuild 3000

FIGURE is mem, durable_full, durable_normal, durable_default, durable_async,
durable_background, concurrent (N steps per app, 100 apps), resume, replay or
rebuild (N steps of history, built before profiling starts). The accounts in
docs/benchmarks.md ("What limits each figure") come from these profiles.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import load_systems  # noqa: E402


async def measured(system: object, figure: str, n: int, d: Path, prof: cProfile.Profile) -> None:
    s = system
    if figure in ("resume", "replay", "rebuild"):
        await s.build_history(d / "h.db", n)  # type: ignore[attr-defined]
    prof.enable()
    try:
        if figure == "mem":
            await s.mem(n)  # type: ignore[attr-defined]
        elif figure.startswith("durable_"):
            config = s.durable_rows[figure.removeprefix("durable_")]  # type: ignore[attr-defined]
            if isinstance(config, str):
                raise SystemExit(f"n/a: {config}")
            await s.durable(n, d / "x.db", config)  # type: ignore[attr-defined]
        elif figure == "concurrent":
            await s.concurrent(100, n, d / "c.db")  # type: ignore[attr-defined]
        elif figure == "resume":
            for _ in range(20):
                await s.resume(d / "h.db", n)  # type: ignore[attr-defined]
        elif figure == "replay":
            await s.replay(d / "h.db", n)  # type: ignore[attr-defined]
        elif figure == "rebuild":
            await s.rebuild(d / "h.db", n, d / "o.db", n)  # type: ignore[attr-defined]
        else:
            raise SystemExit(f"unknown figure {figure!r}")
    finally:
        prof.disable()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("system")
    p.add_argument("figure")
    p.add_argument("n", type=int, nargs="?", default=3000)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    args = p.parse_args()
    system = load_systems([args.system])[args.system]
    if isinstance(system, str):
        raise SystemExit(f"{args.system}: {system}")
    prof = cProfile.Profile()
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(system.mem(30))  # imports and first-call costs out of the profile
        asyncio.run(measured(system, args.figure, args.n, Path(tmp), prof))
    pstats.Stats(prof).sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
