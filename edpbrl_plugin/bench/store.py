"""``edpbrl bench store``: durability of acknowledged answers under SIGKILL, and answer throughput.

A writer process answers questions and prints an acknowledgement after each committed answer; it
is killed with SIGKILL at a random moment; the store is reopened and every acknowledged answer must
be there with ``PRAGMA integrity_check`` = ok. Repeated ``trials`` times on one growing database.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..storage.store import PreferenceStore
from .common import environment, write_json


def start_writer(db: str | Path, session: str, n: int) -> subprocess.Popen:
    """A writer process answering ``n`` questions of ``session`` (see ``store_writer``)."""
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, "-m", "edpbrl_plugin.bench.store_writer", str(db), session, str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


def _acks(lines, into: dict) -> None:
    for line in lines:
        if line.startswith("ack"):
            _, query, choice = line.split()
            into[int(query)] = choice


def crash_trials(db: str | Path, trials: int, seed: int = 0, session: str = "crash") -> dict:
    """Kill a writer ``trials`` times at random moments; count acknowledged answers lost after reopening."""
    PreferenceStore(db).close()
    rng = random.Random(seed)
    acknowledged: dict[int, str] = {}
    lost = integrity_failures = 0
    for _ in range(trials):
        writer = start_writer(db, session, 1_000_000)
        deadline = time.monotonic() + rng.uniform(0.3, 1.2)
        while time.monotonic() < deadline:
            _acks([writer.stdout.readline()], acknowledged)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        _acks(writer.stdout.read().splitlines(), acknowledged)  # acknowledged before the kill, read after
        with PreferenceStore(db) as store:
            integrity_failures += store.integrity_check() != "ok"
            stored = {a.query: a.choice for a in store.answers(session)}
        lost += sum(stored.get(q) != c for q, c in acknowledged.items())
    return {"trials": trials, "acknowledged": len(acknowledged), "lost": lost, "integrity_failures": integrity_failures}


def throughput(db: str | Path, n: int = 300) -> float:
    """Committed answers per second (one question + one answer each, fsync per commit)."""
    with PreferenceStore(db) as store:
        store.create_session("speed")
        ids = store.add_candidates("speed", ["a", "b"], features=[[0.0, 1.0], [1.0, 0.0]])
        start = time.perf_counter()
        for _ in range(n):
            store.submit_answer(store.add_query("speed", ids).id, 0)
        return n / (time.perf_counter() - start)


def run(out: Path, trials: int = 200, seed: int = 0) -> dict:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        crash = crash_trials(Path(tmp) / "crash.db", trials, seed)
        rate = throughput(Path(tmp) / "speed.db")
    report = {"benchmark": "store", "seed": seed, "environment": environment(), **crash, "answers_per_second": rate}
    write_json(out / "store.json", report)
    print(
        f"{crash['trials']} SIGKILL trials: {crash['acknowledged']} acknowledged answers, {crash['lost']} lost, "
        f"{crash['integrity_failures']} integrity failures; {rate:.0f} committed answers/s"
    )
    return report
