"""Ordinary mistakes through the installed ``nni-udc`` command: one line naming the file, field or path, exit 2.

Issue 10, deliverables 3 and 4. Every case runs the real console script in a subprocess and fails before any
training starts; the cases run side by side (each process spends its time importing torch).
"""
from __future__ import annotations

import json
import math
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

NNI_UDC = str(Path(sys.executable).parent / "nni-udc")
GOOD = "name: tiny\nspace: {name: digits}\ntraining: {epochs: 1, finetune_epochs: 0}\npareto: {trials: 2, baseline: false}\n"
FRONT = {"cost": "memory_bits", "variable": "target", "hypervolume": 0.5,
         "reference_point": {"accuracy": 0.0, "relative_cost": 1.0},
         "front": [{"number": 0, "accuracy": 0.9, "relative_cost": 0.1}]}


@dataclass(frozen=True)
class Case:
    name: str
    setup: Callable[[Path], list[str]]  # writes the case's files into a folder; returns the command's arguments
    message: str  # a regular expression the one line must match (after "nni-udc COMMAND: error: ")
    absent: str | None = None  # a path (relative to the folder) the command must not have created


def _file(folder: Path, name: str, text: str | bytes) -> str:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return str(path)


def _experiment(folder: Path, extra: str = "", *, output: str = "run") -> str:
    return _file(folder, "exp.yaml", GOOD + f"output: {folder / output}\n" + extra)


def _front(folder: Path, change: Callable[[dict], None] | None = None, text: str | None = None) -> list[str]:
    data = json.loads(json.dumps(FRONT))
    if change is not None:
        change(data)
    _file(folder, "run/front.json", text if text is not None else json.dumps(data))
    return ["show", str(folder / "run")]


def _truncated_database(folder: Path) -> list[str]:
    db = folder / "run" / "study.db"
    db.parent.mkdir()
    with sqlite3.connect(db) as connection:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    db.write_bytes(db.read_bytes()[:len(db.read_bytes()) // 2])  # a copy or a disk that stopped half-way
    return ["pareto", _experiment(folder)]


def _unwritable(folder: Path) -> list[str]:
    if os.geteuid() != 0:
        (folder / "locked").mkdir(mode=0o555)
        return ["search", _experiment(folder), "--out", str(folder / "locked" / "run")]
    return ["search", _experiment(folder), "--out", "/sys/nni-udc-test-run"]  # root writes anywhere but here


def _bomb(folder: Path) -> list[str]:
    lines, previous = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]'], "a0"
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*{previous}'] * 9)}]")
        previous = f"a{i}"
    return ["search", _file(folder, "bomb.yaml", "\n".join(lines) + f"\nspace: {{name: digits, args: *{previous}}}\n")]


CASES = [
    # deliverable 3: paths and files
    Case("output is a file (--out)", lambda f: ["search", _experiment(f), "--out", _file(f, "taken", "")],
         r"taken: is a file, so the output directory '.*taken' cannot be created there"),
    Case("output is a file (file's output)", lambda f: (_file(f, "taken", ""), ["pareto", _experiment(f, output="taken")])[1],
         r"taken: is a file, so the output directory"),
    Case("output under a file", lambda f: (_file(f, "taken", ""), ["search", _experiment(f), "--out", str(f / "taken/run")])[1],
         r"taken: is a file, so the output directory '.*taken/run' cannot be created there"),
    Case("output not writable", _unwritable, r"the output directory is not writable: "),
    Case("corrupt study.db", lambda f: (_file(f, "run/study.db", os.urandom(4096)), ["pareto", _experiment(f)])[1],
         r"run/study\.db: the study's storage is not a usable SQLite database \(file is not a database\)"),
    Case("truncated study.db", _truncated_database,
         r"run/study\.db: the study's storage is (damaged|not a usable SQLite database)"),
    Case("storage in a missing directory", lambda f: ["pareto", _file(
        f, "exp.yaml", GOOD.replace("baseline: false}", f"baseline: false, storage: 'sqlite:///{f}/gone/study.db'}}")
        + f"output: {f}/run\n")],
         r"exp\.yaml: pareto\.storage: must be a file in an existing directory \('.*gone' is not one\)", "run"),
    Case("--storage with a bad URL", lambda f: ["pareto", _experiment(f), "--storage", "mongodb://db/x"],
         r"exp\.yaml: pareto\.storage \(from the command line\): must be an SQLAlchemy URL .*, but got 'mongodb://db/x'",
         "run"),
    Case("--storage sqlite:// with two slashes", lambda f: ["pareto", _experiment(f), "--storage", "sqlite://x.db"],
         r"pareto\.storage \(from the command line\): must be an SQLAlchemy URL", "run"),
    Case("--storage journal in a missing directory",
         lambda f: ["pareto", _experiment(f), "--storage", f"journal:{f}/gone/journal.log"],
         r"pareto\.storage \(from the command line\): must be a file in an existing directory", "run"),
    Case("binary experiment file", lambda f: ["search", _file(f, "exp.yaml", bytes(range(128, 256)))],
         r"exp\.yaml: not a text \(UTF-8\) file"),
    Case("binary target file", lambda f: (_file(f, "target.yaml", bytes(range(128, 256))),
                                          ["search", _experiment(f, "hardware: {target: target.yaml}\n")])[1],
         r"exp\.yaml: hardware\.target: target file '.*target\.yaml' is not a text \(UTF-8\) file"),
    Case("front.json missing a field", lambda f: _front(f, lambda d: d.pop("hypervolume")),
         r"run/front\.json: missing field 'hypervolume'"),
    Case("front.json point missing a field", lambda f: _front(f, lambda d: d["front"][0].pop("accuracy")),
         r"run/front\.json: front\[0\]: missing field 'accuracy'"),
    Case("front.json string for a number", lambda f: _front(f, lambda d: d["front"][0].update(accuracy="0.9")),
         r"front\[0\]\.accuracy: must be a number in \[0, 1\], but got '0\.9'"),
    Case("front.json list for a number", lambda f: _front(f, lambda d: d.update(hypervolume=[0.5])),
         r"run/front\.json: hypervolume: must be a finite number >= 0, but got \[0\.5\]"),
    Case("front.json NaN", lambda f: _front(f, lambda d: d["front"][0].update(relative_cost=math.nan)),
         r"front\[0\]\.relative_cost: must be a finite number >= 0, but got nan"),
    Case("front.json negative", lambda f: _front(f, lambda d: d["front"][0].update(relative_cost=-0.5)),
         r"front\[0\]\.relative_cost: must be a finite number >= 0, but got -0\.5"),
    Case("front.json cut short", lambda f: _front(f, text=json.dumps(FRONT)[:40]),
         r"run/front\.json: not valid JSON \(cut short\?\)"),
    Case("front.json reference point a list", lambda f: _front(f, lambda d: d.update(reference_point=[0, 1])),
         r"run/front\.json: reference_point: must be a mapping, but got \[0, 1\]"),
    # deliverable 4: bounds and hygiene
    Case("pareto.trials too many", lambda f: ["pareto", _file(f, "exp.yaml", GOOD.replace("trials: 2", "trials: 100000000"))],
         r"exp\.yaml: pareto\.trials: must be an integer from 1 to 10,000, but got 100000000"),
    Case("--trials too many", lambda f: ["pareto", _experiment(f), "--trials", "20000"],
         r"argument --trials: must be an integer from 1 to 10,000, but got '20000'"),
    Case("pareto.workers zero", lambda f: ["pareto", _file(f, "exp.yaml", GOOD.replace("trials: 2", "trials: 2, workers: 0"))],
         r"exp\.yaml: pareto\.workers: must be an integer >= 1 \(or null\), but got 0"),
    Case("--workers not a number", lambda f: ["pareto", _experiment(f), "--workers", "two"],
         r"argument --workers: must be an integer >= 1, but got 'two'"),
    Case("pareto.initial too many", lambda f: ["pareto", _file(f, "exp.yaml", GOOD.replace("trials: 2", "trials: 2, initial: 5000"))],
         r"exp\.yaml: pareto\.initial: must be an integer from 0 to 100, but got 5000"),
    Case("duplicate key", lambda f: ["search", _file(f, "exp.yaml", GOOD + "space: {name: sparse-cell}\n")],
         r"exp\.yaml: not valid YAML at line 5, column 1: duplicate key 'space' \(the file gives it twice\)"),
    Case("duplicate nested key", lambda f: ["search", _file(f, "exp.yaml", GOOD.replace("epochs: 1,", "epochs: 1, epochs: 2,"))],
         r"exp\.yaml: not valid YAML at line 3, column \d+: duplicate key 'epochs'"),
    Case("YAML alias bomb", _bomb, r"bomb\.yaml: the document expands to more than 100,000 values"),
    Case("a long bad value is cut",
         lambda f: ["search", _file(f, "exp.yaml", GOOD.replace("name: tiny", "name: [" + "7, " * 20000 + "7]"))],
         r"exp\.yaml: name: must be a non-empty string, but got \[7, 7, 7, 7, \.\.\.\]$"),
    Case("--weight infinite", lambda f: ["search", _experiment(f), "--weight", "inf"],
         r"argument --weight: must be a finite number >= 0, but got 'inf'"),
    Case("--target above 1", lambda f: ["search", _experiment(f), "--target", "1.5"],
         r"argument --target: must be a number > 0 and <= 1, but got '1\.5'"),
    Case("space arguments checked first", lambda f: ["search", _file(
        f, "exp.yaml", GOOD.replace("{name: digits}", "{name: digits, args: {depth: 3}}") + f"output: {f}/run\n")],
         r"exp\.yaml: space\.args: digits rejects \{'depth': 3\}: .*unexpected keyword argument 'depth'", "run"),
    Case("space and data set checked first", lambda f: ["pareto", _file(
        f, "exp.yaml", GOOD + f"data: {{name: mnist1d}}\noutput: {f}/run\n")],
         r"exp\.yaml: space\.name: space 'digits' takes inputs of shape \(1, 8, 8\), but data set 'mnist1d' has \(1, 40\)",
         "run"),
]


def _run(case: Case, folder: Path) -> subprocess.CompletedProcess[str]:
    folder.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([NNI_UDC, *case.setup(folder)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=folder)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    root = tmp_path_factory.mktemp("cli-inputs")
    folders = {case.name: root / f"case{i:02d}" for i, case in enumerate(CASES)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        runs = {case.name: pool.submit(_run, case, folders[case.name]) for case in CASES}
        return {name: (folders[name], run.result()) for name, run in runs.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_one_line_and_exit_status_2(case: Case, results) -> None:
    folder, done = results[case.name]
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) >= 1, done.stderr
    line = lines[-1]
    assert re.match(r"nni-udc \S+: error: ", line), done.stderr
    assert re.search(case.message, line), line
    assert len(line) < 400, f"{len(line)} characters"
    if case.absent is not None:
        assert not (folder / case.absent).exists(), f"{case.absent} was created before the check"
