"""What a user installs: one top-level package, light imports, no old names.

The wheel is built offline (``pip wheel --no-build-isolation``) from a copy of
the sources, so the test needs only the setuptools of the ``dev`` extra and
leaves no ``build/`` in the work tree. The import time of ``statelog`` is
printed, never asserted (figures belong in docs/benchmarks.md).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import statistics
import subprocess
import sys
import tomllib
import warnings
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Modules ``import statelog`` must not load: the Kafka driver is an extra, and
#: the service's web stack belongs to the service, not to the library.
HEAVY = ("aiokafka", "redis", "fastapi", "httpx")

#: The package folders the wheel is built from (statelog/ links the other three).
SOURCES = ("statelog", "eventstore", "engine", "projections")


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the test's interpreter in a fresh process, outside the work tree."""
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT.parent, timeout=120
    )


def test_import_statelog_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, statelog, statelog.eventstore, statelog.engine, statelog.projections\n"
        f"heavy = {HEAVY!r}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = _python("-c", code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"import statelog loaded {done.stdout.strip()}"


def test_the_kafka_backend_loads_aiokafka() -> None:
    # The check above can fail: importing the Kafka backend does load the driver.
    done = _python("-c", "import sys, statelog.eventstore.kafka; print('aiokafka' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel of a copy of the sources (symlinks kept, as in a clone)."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=ignore)
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--quiet", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (path,) = out.glob("statelog-*.whl")
    return zipfile.ZipFile(path)


def test_the_wheel_holds_one_top_level_package(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"statelog"}
    for inside in (
        "statelog/py.typed",
        "statelog/eventstore/__init__.py",
        "statelog/eventstore/py.typed",
        "statelog/eventstore/sqlite/__init__.py",
        "statelog/eventstore/kafka/__init__.py",
        "statelog/engine/__init__.py",
        "statelog/engine/py.typed",
        "statelog/projections/__init__.py",
        "statelog/projections/py.typed",
    ):
        assert inside in names, f"{inside} is not in the wheel"
    # The symlinks are followed: the wheel holds files, never a link.
    links = [i.filename for i in wheel.infolist() if stat.S_ISLNK(i.external_attr >> 16)]
    assert links == []
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "statelog = statelog._cli:main" in wheel.read(entry_points).decode()


def test_cold_import_time_is_printed(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -X importtime -c 'import statelog'``: the cumulative time, 5 fresh processes."""
    runs = []
    for _ in range(5):
        done = _python("-X", "importtime", "-c", "import statelog")
        assert done.returncode == 0, done.stderr
        # "import time: self [us] | cumulative | imported package"; the top-level line.
        (line,) = [ln for ln in done.stderr.splitlines() if ln.endswith("| statelog")]
        runs.append(int(line.split("|")[1]))
    with capsys.disabled():
        print(
            f"\nimport statelog: {statistics.median(runs) / 1000:.1f} ms median "
            f"(runs: {', '.join(f'{us / 1000:.1f}' for us in runs)} ms)"
        )


OLD_IMPORT = re.compile(
    r"^\s*(?:from\s+(?:eventstore|engine|projections)(?:\.\w+)*\s+import\b"
    r"|import\s+(?:eventstore|engine|projections)\b)",
    re.M,
)


def test_old_import_pattern_matches_what_it_should() -> None:
    assert OLD_IMPORT.search("from eventstore import Event")
    assert OLD_IMPORT.search("    import engine")
    assert OLD_IMPORT.search("from projections._runner import X")
    assert OLD_IMPORT.search("import eventstore.kafka as k")
    assert not OLD_IMPORT.search("from statelog.eventstore import Event")
    assert not OLD_IMPORT.search("import statelog.engine")
    assert not OLD_IMPORT.search("from statelog import engine")
    assert not OLD_IMPORT.search("import engineering")


def test_no_file_imports_the_old_top_level_names() -> None:
    """Only ``statelog`` is installed: ``from eventstore import ...`` works nowhere else."""
    paths = [ROOT / "README.md"]
    for folder in ("tests", "bench", "docs", *SOURCES):
        for parent, dirs, files in os.walk(ROOT / folder):  # statelog/'s links not followed
            dirs[:] = [d for d in dirs if d not in {"node_modules", "__pycache__"}]
            paths += [Path(parent, f) for f in files if f.endswith((".py", ".md"))]
    found = []
    for path in sorted(paths):
        text = path.read_text(encoding="utf-8")
        for match in OLD_IMPORT.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{path.relative_to(ROOT)}:{line}: {match.group(0).strip()}")
    assert found == [], "import from statelog.<package> instead:\n" + "\n".join(found)


# --------------------------------------------------------------------------- bounds

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*)$")


def _lower_bounds() -> dict[str, str | None]:
    """name -> the ``>=`` bound of every third-party requirement (package, extras but bench)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    bounds: dict[str, str | None] = {}
    tested = [reqs for extra, reqs in extras.items() if extra != "bench"]
    for raw in [*project["dependencies"], *(req for reqs in tested for req in reqs)]:
        match = REQUIREMENT.match(raw)
        assert match, raw
        name, spec = match.group(1).lower(), match.group(2)
        if name != "statelog":
            lower = re.findall(r">=\s*([0-9][0-9A-Za-z.]*)", spec)
            bounds[name] = lower[0] if len(lower) == 1 else None
    return bounds


def _lowest_pins() -> dict[str, str]:
    pins = {}
    for raw in (ROOT / "constraints" / "lowest.txt").read_text(encoding="utf-8").splitlines():
        line = raw.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints/lowest.txt: {raw!r} is not a name==version pin"
            pins[name.strip().lower()] = version.strip()
    return pins


def test_lowest_constraints_pin_every_lower_bound() -> None:
    """constraints/lowest.txt pins each dependency at exactly its pyproject lower bound."""
    bounds, pins = _lower_bounds(), _lowest_pins()
    assert "msgspec" in bounds and "pytest" in bounds  # the parse found the lists
    wrong = [
        f"{name}: pyproject.toml says >={lower}, constraints/lowest.txt pins {pins.get(name)}"
        for name, lower in bounds.items()
        if lower is None or pins.get(name) != lower
    ]
    wrong += [f"{name}: pinned, but not in pyproject.toml" for name in set(pins) - set(bounds)]
    assert wrong == [], "every dependency needs one >= bound, pinned in lowest.txt:\n" + "\n".join(
        wrong
    )


def test_testcontainers_has_what_the_broker_fixture_calls() -> None:
    """Without Docker the fixture never imports testcontainers: check its bound here."""
    with warnings.catch_warnings():  # testcontainers.kafka warns it moved
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from testcontainers.community.kafka import KafkaContainer
        except ImportError:
            from testcontainers.kafka import KafkaContainer
    assert callable(KafkaContainer.with_kraft)
    assert callable(KafkaContainer.get_bootstrap_server)
