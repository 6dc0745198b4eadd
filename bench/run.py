"""statelog side by side with Apache Burr, LangGraph and eventsourcing, in one run.

    python bench/run.py            # the full run (~10-15 minutes on 2 cores)
    python bench/run.py --quick    # smaller sizes (~2 minutes); says so in its output

Every system runs the same workload (``bench/workloads.py``): a 3-action loop over
a ~1 KB state, each step changing one small field. Each figure is measured side by
side: for each run, every system takes its turn (the order rotates), after a
warm-up run that is thrown away; the table shows the median of the runs and the
ratio statelog / peer. A peer that cannot give a figure shows ``n/a`` and why.

Two yardsticks run beside the peers (``bench/peers/floor_sys.py``): ``floor``, bare
stdlib ``sqlite3`` on the calling thread, and, for resume, ``floor_off_loop``: the
same bare resume with its read and its step each on a worker thread, as an asyncio
library that never blocks its loop must do it (the gap between the two is what the
two hand-offs cost on this machine).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_chat import chat_table, render  # noqa: E402
from bench.peers._base import DurableConfig, System  # noqa: E402
from bench.workloads import FULL, QUICK, STATE_BYTES, TINY, NotApplicableError, Sizes  # noqa: E402

PEERS = ("burr", "langgraph", "eventsourcing", "floor", "floor_off_loop")
SLOW = {"langgraph"}  # measured with fewer steps (its steps take ~1-2 ms each)


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str  # "steps/s", "events/s", "ms", "bytes"

    @property
    def higher_is_better(self) -> bool:
        return self.unit.endswith("/s")


def figures(sizes: Sizes) -> list[Figure]:
    out = [
        Figure("mem", "steps/s in memory", "steps/s"),
        Figure("durable_full", "durable steps/s, SQLite WAL + synchronous=FULL", "steps/s"),
        Figure("durable_normal", "durable steps/s, SQLite WAL + synchronous=NORMAL", "steps/s"),
        Figure("durable_default", "durable steps/s, each system's defaults", "steps/s"),
        Figure("durable_async", "durable steps/s, async API, WAL + NORMAL", "steps/s"),
        Figure("durable_best", "durable steps/s, best of the rows above", "steps/s"),
        Figure(
            "durable_background",
            "steps/s, persisted in the background, WAL + NORMAL (not durable per step)",
            "steps/s",
        ),
        Figure(
            "concurrent",
            f"{sizes.concurrent_apps} concurrent apps, durable, total steps/s",
            "steps/s",
        ),
    ]
    out += [
        Figure(f"resume_{n}", f"resume latency, {n:,} steps of history", "ms")
        for n in sizes.resume_history
    ]
    mid = sizes.resume_history[1]
    out += [
        Figure("bytes", f"bytes on disk per step ({mid:,}-step history)", "bytes"),
        Figure("replay", f"full replay, events/s ({mid:,} events)", "events/s"),
        Figure("rebuild", "projection rebuild, events/s (audit read model)", "events/s"),
    ]
    return out


@dataclass
class Cell:
    value: float | None = None
    samples: list[float] = field(default_factory=list)
    note: str = ""  # n/a reason, error, or the configuration used

    def finish(self) -> None:
        if self.samples:
            self.value = statistics.median(self.samples)


@dataclass
class Results:
    mode: str
    sizes: dict[str, Any]
    systems: list[str]
    versions: dict[str, str]
    machine: dict[str, str]
    cells: dict[str, dict[str, Cell]]
    figures: list[dict[str, str]]
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return data


def load_systems(names: Sequence[str]) -> dict[str, System | str]:
    """Each system's adapter, or the reason it is not available."""
    out: dict[str, System | str] = {}
    for name in names:
        try:
            if name == "statelog":
                from bench.peers.statelog_sys import Statelog

                ours = Statelog()
                ours.available()  # imports the whole tree now; a broken tree fails loudly
                out[name] = ours
                continue
            if name == "burr":
                from bench.peers.burr_peer import Burr

                system: System = Burr()
            elif name == "langgraph":
                from bench.peers.langgraph_peer import LangGraph

                system = LangGraph()
            elif name == "eventsourcing":
                from bench.peers.eventsourcing_peer import EventSourcing

                system = EventSourcing()
            elif name == "floor":
                from bench.peers.floor_sys import Floor

                system = Floor()
            elif name == "floor_off_loop":
                from bench.peers.floor_sys import FloorOffLoop

                system = FloorOffLoop()
            else:
                raise SystemExit(f"unknown system {name!r}")
        except ImportError as exc:  # pragma: no cover - the adapters import lazily
            out[name] = f"not installed ({exc})"
            continue
        missing = system.available()
        out[name] = missing if missing else system
    return out


def machine() -> dict[str, str]:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = " ".join(f.read().split()[:3])
    except OSError:
        pass
    import sqlite3

    info["sqlite"] = sqlite3.sqlite_version
    return info


def _steps(name: str, n: int) -> int:
    """Steps for ``name`` (multiples of 3: LangGraph runs whole a-b-c rounds)."""
    return max(3, n - n % 3)


class Bench:
    def __init__(
        self,
        sizes: Sizes,
        systems: dict[str, System | str],
        workdir: Path,
        log: Callable[[str], None],
    ) -> None:
        self.sizes = sizes
        self.systems = systems
        self.workdir = workdir
        self.log = log
        self.figs = figures(sizes)
        self.cells: dict[str, dict[str, Cell]] = {
            f.key: {name: Cell() for name in systems} for f in self.figs
        }
        self._counter = 0
        for name, system in systems.items():
            if isinstance(system, str):
                for f in self.figs:
                    self.cells[f.key][name].note = f"n/a: {system}"

    # --- helpers

    def live(self) -> list[tuple[str, System]]:
        return [(n, s) for n, s in self.systems.items() if isinstance(s, System)]

    def path(self, name: str, tag: str) -> Path:
        self._counter += 1
        d = self.workdir / f"{self._counter:04d}-{name}-{tag}"
        d.mkdir(parents=True)
        return d / "db.sqlite"

    @staticmethod
    def drop(path: Path) -> None:
        shutil.rmtree(path.parent, ignore_errors=True)

    async def interleaved(
        self,
        key: str,
        measure: Callable[[str, System], Awaitable[float | None]],
        runs: int | None = None,
    ) -> None:
        """Warm-ups then ``runs`` rounds; each round every system once, order rotating."""
        live = [(n, s) for n, s in self.live() if not self.cells[key][n].note.startswith("n/a")]
        rounds = self.sizes.warmups + (runs or self.sizes.runs)
        for r in range(rounds):
            order = live[r % len(live) :] + live[: r % len(live)] if live else []
            for name, system in order:
                cell = self.cells[key][name]
                if cell.note.startswith(("n/a", "error")):
                    continue
                gc.collect()
                try:
                    value = await measure(name, system)
                except NotApplicableError as exc:
                    cell.note = f"n/a: {exc}"
                    continue
                except Exception as exc:  # a broken measurement must not hide the rest
                    cell.note = f"error: {type(exc).__name__}: {exc}"
                    self.log(traceback.format_exc())
                    continue
                if value is not None and r >= self.sizes.warmups:
                    cell.samples.append(value)
        for name, _ in live:
            self.cells[key][name].finish()

    # --- figures

    async def run(self) -> None:
        s = self.sizes
        self.log(f"in memory: {s.mem_steps:,} steps per run")

        async def mem(name: str, system: System) -> float:
            n = _steps(name, s.mem_steps // 5 if name in SLOW else s.mem_steps)
            return n / await system.mem(n)

        await self.interleaved("mem", mem)

        for row in ("full", "normal", "default", "async", "background"):
            key = f"durable_{row}"
            for name, system in self.live():
                config = system.durable_rows.get(row, "not measured")
                if isinstance(config, str):
                    self.cells[key][name].note = f"n/a: {config}"
            self.log(f"durable ({row}): {s.durable_steps:,} steps per run")

            async def durable(name: str, system: System, row: str = row, key: str = key) -> float:
                config = system.durable_rows[row]
                assert isinstance(config, DurableConfig)
                n = _steps(name, s.durable_steps_slow if name in SLOW else s.durable_steps)
                path = self.path(name, key)
                try:
                    seconds, pragmas = await system.durable(n, path, config)
                finally:
                    self.drop(path)
                self.cells[key][name].note = f"{config.api}; {pragmas}"
                return n / seconds

            await self.interleaved(key, durable)
        self._best()

        self.log(f"concurrent: {s.concurrent_apps} apps x {s.concurrent_steps} steps per run")

        async def concurrent(name: str, system: System) -> float:
            per_app = s.concurrent_steps
            if name in SLOW:
                per_app = max(3, per_app // 4)
            per_app = _steps(name, per_app)
            path = self.path(name, "concurrent")
            try:
                seconds, how = await system.concurrent(s.concurrent_apps, per_app, path)
            finally:
                self.drop(path)
            self.cells["concurrent"][name].note = how
            return s.concurrent_apps * per_app / seconds

        await self.interleaved("concurrent", concurrent)

        mid = s.resume_history[1]
        for n in s.resume_history:
            await self._history_figures(n, with_mid=n == mid)

    def _best(self) -> None:
        rows = ("durable_full", "durable_normal", "durable_default", "durable_async")
        for name in self.systems:
            best: tuple[float, str] | None = None
            for key in rows:
                cell = self.cells[key][name]
                if cell.value is not None and (best is None or cell.value > best[0]):
                    best = (cell.value, f"{key.removeprefix('durable_')}: {cell.note}")
            target = self.cells["durable_best"][name]
            if best is not None:
                target.value, target.note = best
                target.samples = [best[0]]
            elif not target.note:
                target.note = "n/a: no durable row measured"

    async def _history_figures(self, n: int, *, with_mid: bool) -> None:
        s = self.sizes
        key = f"resume_{n}"
        self.log(f"history of {n:,} steps: building")
        paths: dict[str, Path] = {}
        for name, system in self.live():
            path = self.path(name, f"history-{n}")
            start = time.perf_counter()
            try:
                await system.build_history(path, n)
            except NotApplicableError as exc:
                self.cells[key][name].note = f"n/a: {exc}"
                self.drop(path)
                continue
            except Exception as exc:
                self.cells[key][name].note = f"error: {type(exc).__name__}: {exc}"
                self.log(traceback.format_exc())
                self.drop(path)
                continue
            paths[name] = path
            settle(path)  # a settled file, as a restarted process finds it
            self.log(f"  {name}: built in {time.perf_counter() - start:.1f} s")
            if with_mid:
                cell = self.cells["bytes"][name]
                cell.samples = [system.bytes_on_disk(path) / n]
                cell.finish()
        for name, _ in self.live():
            if name not in paths:
                for k in ("bytes", "replay", "rebuild"):
                    if with_mid and not self.cells[k][name].note:
                        self.cells[k][name].note = self.cells[key][name].note

        os.sync()  # write back what building left dirty, so it does not land on a sample

        async def resume(name: str, system: System) -> float | None:
            if name not in paths:
                return None
            return 1000 * await system.resume(paths[name], n)

        self.log(f"history of {n:,} steps: resume x {s.resume_samples}")
        await self.interleaved(key, resume, runs=s.resume_samples)

        if with_mid:
            self.log(f"history of {n:,} steps: full replay")

            async def replay(name: str, system: System) -> float | None:
                if name not in paths:
                    return None
                return n / await system.replay(paths[name], n)

            await self.interleaved("replay", replay)
            self.log(f"history of {n:,} steps: projection rebuild")

            async def rebuild(name: str, system: System) -> float | None:
                if name not in paths:
                    return None
                out = self.path(name, "rebuild")
                try:
                    seconds, events = await system.rebuild(paths[name], n, out, s.rebuild_limit)
                finally:
                    self.drop(out)
                self.cells["rebuild"][name].note = f"{events:,} events per sample"
                return events / seconds

            await self.interleaved("rebuild", rebuild)
        for path in paths.values():
            self.drop(path)


def settle(path: Path) -> None:
    """Checkpoint the WAL into the database file (and truncate it)."""
    import sqlite3

    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


# --------------------------------------------------------------------------- output


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit == "ms":
        return f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    if unit == "bytes":
        return f"{value:,.0f}"
    return f"{value:,.0f}"


def ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return ""
    return f"{ours / theirs:.2f}x"


def table_rows(results: Results) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows and footnotes (n/a reasons) of the comparison table."""
    peers = [s for s in results.systems if s != "statelog"]
    header = ["figure", "unit", "statelog"]
    for p in peers:
        header += [p, f"statelog/{p}"]
    notes: list[str] = []
    rows = []
    for fig in results.figures:
        cells = results.cells[fig["key"]]
        ours = cells.get("statelog", Cell())
        row = [fig["label"], fig["unit"], _cell_text(ours, fig["unit"], notes)]
        for p in peers:
            theirs = cells.get(p, Cell())
            row += [_cell_text(theirs, fig["unit"], notes), ratio(ours.value, theirs.value)]
        rows.append(row)
    return header, rows, notes


def _cell_text(cell: Cell, unit: str, notes: list[str]) -> str:
    if cell.value is not None:
        return fmt(cell.value, unit)
    reason = cell.note or "n/a: not measured"
    if reason not in notes:
        notes.append(reason)
    return f"{'n/a' if reason.startswith('n/a') else 'error'} [{notes.index(reason) + 1}]"


def render_text(results: Results) -> str:
    header, rows, notes = table_rows(results)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        pairs = enumerate(zip(cells, widths, strict=True))
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs)

    lines = [line(header), "  ".join("-" * w for w in widths)]
    lines += [line(r) for r in rows]
    lines.append("")
    lines += [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return "\n".join(lines)


def render_markdown(results: Results) -> str:
    header, rows, notes = table_rows(results)
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    if notes:
        out.append("")
        out += [f"[{i}] {n}  " for i, n in enumerate(notes, 1)]
    return "\n".join(out)


def render_configs(results: Results) -> str:
    """Which API and SQLite settings each measured durable cell really used."""
    lines = []
    for fig in results.figures:
        if not fig["key"].startswith(("durable_", "concurrent")):
            continue
        for name in results.systems:
            cell = results.cells[fig["key"]][name]
            if cell.value is not None:
                lines.append(f"- {fig['label']} / {name}: {cell.note}")
    return "\n".join(lines)


def plot(results: Results, path: Path) -> bool:
    """steps/s (in memory and durable) and bytes per step per system, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    systems = results.systems
    keys = [
        ("mem", "in memory"),
        ("durable_full", "WAL+FULL"),
        ("durable_normal", "WAL+NORMAL"),
        ("concurrent", "100 apps"),
    ]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(len(systems), 1)
    missing: list[float] = []
    top = 1.0
    for i, name in enumerate(systems):
        values = [results.cells[k][name].value or 0 for k, _ in keys]
        xs = [j + i * width for j in range(len(keys))]
        ax1.bar(xs, values, width, label=name, color=f"C{i}")
        for x, v in zip(xs, values, strict=True):
            if v:
                top = max(top, v)
                ax1.text(
                    x, v * 1.08, f"{v:,.0f}", ha="center", va="bottom", fontsize=6.5, rotation=90
                )
            else:
                missing.append(x)
    ax1.set_yscale("log")
    ax1.set_ylim(100, top * 12)
    for x in missing:
        ax1.text(x, 130, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax1.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(keys))])
    ax1.set_xticklabels([label for _, label in keys])
    ax1.set_ylabel("steps/s (log scale, higher is better)")
    ax1.set_title(f"Throughput ({results.mode} run, median of {results.sizes['runs']})")
    ax1.legend(fontsize=8, ncol=len(systems), loc="upper right")
    values = [results.cells["bytes"][n].value or 0 for n in systems]
    ax2.bar(range(len(systems)), values, color=[f"C{i}" for i in range(len(systems))])
    ax2.set_xticks(range(len(systems)))
    ax2.set_xticklabels(systems, rotation=30, ha="right")
    ax2.set_ylabel("bytes on disk per step (lower is better)")
    ax2.set_title("Storage")
    for i, v in enumerate(values):
        ax2.text(i, v, f"{v:,.0f}" if v else "n/a", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


SECTION = "## Side by side with peers"
TEMPLATE = Path(__file__).resolve().parent / "sbs_section.md"


def describe_sizes(z: dict[str, Any]) -> str:
    slow = ", ".join(sorted(SLOW))
    return (
        f"{z['mem_steps']:,} steps in memory ({z['mem_steps'] // 5:,} for {slow}); "
        f"{z['durable_steps']:,} durable steps ({z['durable_steps_slow']:,} for {slow}); "
        f"{z['concurrent_apps']} apps x {z['concurrent_steps']} steps "
        f"(x {max(3, z['concurrent_steps'] // 4) // 3 * 3} for {slow})"
    )


def render_doc_section(results: Results) -> str:
    """The ``## Side by side with peers`` section of docs/benchmarks.md, filled in."""
    m = results.machine
    machine_text = (
        f"{m.get('cpus', '?')} cores ({m.get('cpu', '?')}), {m.get('platform', '?')}, "
        f"Python {m.get('python', '?')}, SQLite {m.get('sqlite', '?')}"
    )
    versions = ", ".join(f"{k} {v}" for k, v in results.versions.items())
    for pkg in ("matplotlib", "aiosqlite", "msgspec"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions += f", {pkg} {importlib.metadata.version(pkg)}"
    minutes, seconds = divmod(round(results.duration_s), 60)
    fields = {
        "STATE_BYTES": str(STATE_BYTES),
        "MACHINE": machine_text,
        "VERSIONS": versions,
        "LOAD": m.get("loadavg_at_start", "?"),
        "DURATION": f"{minutes} min {seconds} s ({results.mode} run)",
        "TABLE": render_markdown(results),
        "CONFIGS": render_configs(results),
        "REBUILD_LIMIT": f"{results.sizes['rebuild_limit']:,}",
        "SIZES": describe_sizes(results.sizes),
    }
    text = TEMPLATE.read_text()
    for key, value in fields.items():
        text = text.replace("{{" + key + "}}", value)
    return text.rstrip() + "\n"


def write_doc(results: Results, path: Path) -> None:
    """Replace (or insert, first after the intro) this section; keep every other one."""
    section = render_doc_section(results)
    if path.exists():
        doc = path.read_text()
    else:
        doc = (
            "# Benchmarks\n\nEach area records its figures here in its own section, with the "
            "script that produced them (in `bench/`), the machine, and the same-run ratio "
            "to its baseline. Timings are never asserted in tests.\n"
        )
    start = doc.find(SECTION + "\n")
    if start >= 0:
        end = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + section + ("\n" + doc[end + 1 :] if end >= 0 else "")
    else:
        first = doc.find("\n## ")
        if first >= 0:
            doc = doc[: first + 1] + section + "\n" + doc[first + 1 :]
        else:
            doc = doc.rstrip() + "\n\n" + section
    path.write_text(doc)


# --------------------------------------------------------------------------- main


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes, ~2 minutes")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the smoke test
    p.add_argument(
        "--systems",
        default="statelog," + ",".join(PEERS),
        help="comma-separated subset (statelog is always included)",
    )
    p.add_argument(
        "--no-chat", action="store_true", help="leave out the chat workload (bench/bench_chat.py)"
    )
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    p.add_argument("--plot", type=Path, help="also draw the PNG plot here (needs matplotlib)")
    p.add_argument(
        "--doc", type=Path, help="also write the section into this page (docs/benchmarks.md)"
    )
    p.add_argument("--workdir", type=Path, help="where the SQLite files go (default: a temp dir)")
    return p.parse_args(argv)


async def amain(args: argparse.Namespace, log: Callable[[str], None]) -> Results:
    sizes = TINY if args.tiny else QUICK if args.quick else FULL
    names = ["statelog"] + [n for n in args.systems.split(",") if n and n != "statelog"]
    systems = load_systems(names)
    gc.collect()
    gc.freeze()  # imported modules are permanent: the per-sample gc.collect() stays cheap
    versions = {n: (s.version() if isinstance(s, System) else "absent") for n, s in systems.items()}
    start = time.perf_counter()
    own = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="statelog-bench-")) if own else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"statelog bench, {sizes.label} run; files in {workdir}")
    if sizes.label != "full":
        history = ", ".join(f"{n:,}" for n in sizes.resume_history)
        log(
            f"NOTE: {sizes.label} sizes (resume at {history}"
            " steps of history, not 1,000 / 100,000 / 1,000,000); run without --quick for those"
        )
    bench = Bench(sizes, systems, workdir, log)
    try:
        await bench.run()
    finally:
        gc.unfreeze()
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    results = Results(
        mode=sizes.label,
        sizes={k: v for k, v in asdict(sizes).items() if k != "notes"},
        systems=list(systems),
        versions=versions,
        machine=machine(),
        cells=bench.cells,
        figures=[asdict(f) for f in bench.figs],
        duration_s=time.perf_counter() - start,
        notes=[f"state: {STATE_BYTES} bytes of JSON"],
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)

    began = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f}s] {msg}", file=sys.stderr, flush=True)

    results = asyncio.run(amain(args, log))
    print()
    print(
        f"statelog vs peers -- {results.mode} run, median of {results.sizes['runs']} runs "
        f"after {results.sizes['warmups']} warm-up; ratio = statelog / peer "
        "(> 1 is better for statelog on /s rows, < 1 on ms and bytes rows)"
    )
    if results.mode != "full":
        print(f"NOTE: {results.mode} sizes -- not the full run's figures")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in results.versions.items()))
    print("machine: " + ", ".join(f"{k} {v}" for k, v in results.machine.items()))
    print()
    print(render_text(results))
    print()
    print("configurations measured:")
    print(render_configs(results))
    print()
    print(f"run took {results.duration_s:.0f} s")
    chat: list[Any] = []
    if not args.no_chat:
        # each step appends one ~200-byte message: statelog at 1,000 and 10,000 steps,
        # peers that store the whole list per step at sizes they can reach
        ours, peers = (
            ([30], [10])
            if args.tiny
            else ([1000, 3000], [300, 1000])
            if args.quick
            else ([1000, 10000], [500, 2000])
        )
        log("chat workload (bench/bench_chat.py)")
        chat = asyncio.run(chat_table(ours, peers, 1, log))
        print()
        print("chat workload: each step appends one ~200-byte message (WAL + NORMAL)")
        print(render(chat))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        data = results.to_json()
        data["chat"] = [{"system": n, "steps": k, **v} for n, k, v in chat]
        args.json.write_text(json.dumps(data, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text(render_markdown(results) + "\n")
    if args.plot and not plot(results, args.plot):
        print("matplotlib not installed: no plot", file=sys.stderr)
    if args.doc:
        write_doc(results, args.doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
