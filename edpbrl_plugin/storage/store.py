"""Durable preference store: sessions, candidates, questions, answers, reward snapshots and LoRA versions.

SQLite (standard library, WAL journal, ``synchronous=FULL``): every answer is committed before
``submit_answer`` returns, so an acknowledged answer survives a killed process. Questions can be
queued and answered later, in any order, from another process. Images live next to the database in
``<name>_images/``, named by the SHA-256 of their pixels. This module never imports torch: it starts
fast and is cheap to crash-test.
"""

from __future__ import annotations

import io
import json
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import numpy as np
from PIL import Image

from ..learning import answers

APPLICATION_ID = 0x45445042  # "EDPB": marks a file as an edpbrl store
SCHEMA_VERSION = 2
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

#: Forward migrations: MIGRATIONS[v] upgrades a store at version v to v + 1.
MIGRATIONS: dict[int, str] = {
    0: """
        CREATE TABLE sessions (
            id TEXT PRIMARY KEY, user TEXT NOT NULL, created REAL NOT NULL, config TEXT NOT NULL);
        CREATE TABLE candidates (
            id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL REFERENCES sessions(id),
            image_hash TEXT, image_path TEXT, prompt TEXT NOT NULL, seed INTEGER, generator TEXT NOT NULL,
            features BLOB, created REAL NOT NULL);
        CREATE TABLE queries (
            id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL REFERENCES sessions(id),
            candidates TEXT NOT NULL, strategy TEXT NOT NULL, information_gain REAL,
            status TEXT NOT NULL CHECK (status IN ('pending', 'answered', 'skipped', 'withdrawn')),
            created REAL NOT NULL);
        CREATE TABLE answers (
            id INTEGER PRIMARY KEY AUTOINCREMENT, query INTEGER NOT NULL UNIQUE REFERENCES queries(id),
            session TEXT NOT NULL REFERENCES sessions(id), choice TEXT NOT NULL, created REAL NOT NULL);
        CREATE INDEX candidates_session ON candidates(session);
        CREATE INDEX queries_session ON queries(session, status);
        CREATE INDEX answers_session ON answers(session);
    """,
    1: """
        ALTER TABLE answers ADD COLUMN latency REAL;
        CREATE TABLE reward_snapshots (
            id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL REFERENCES sessions(id),
            created REAL NOT NULL, n_answers INTEGER NOT NULL, theta BLOB NOT NULL, covariance BLOB NOT NULL,
            bias REAL NOT NULL);
        CREATE TABLE lora_versions (
            id INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL REFERENCES sessions(id),
            version INTEGER NOT NULL, created REAL NOT NULL, file TEXT NOT NULL, kohya_file TEXT,
            kind TEXT NOT NULL, answers_used INTEGER NOT NULL, drift REAL, metadata TEXT NOT NULL,
            UNIQUE (session, version));
    """,
}


class StoreError(ValueError):
    """A request the store refuses; the message says what was wrong and what to do. Nothing was written."""


@dataclass(frozen=True)
class SessionRecord:
    id: str
    user: str
    created: float
    config: dict


@dataclass(frozen=True)
class CandidateRecord:
    id: int
    session: str
    image_hash: str | None
    image_path: str | None
    prompt: str
    seed: int | None
    generator: dict


@dataclass(frozen=True)
class QueryRecord:
    id: int
    session: str
    candidates: tuple[int, ...]
    strategy: str
    information_gain: float | None
    status: str
    created: float


@dataclass(frozen=True)
class AnswerRecord:
    id: int
    query: int
    session: str
    candidates: tuple[int, ...]
    choice: str
    created: float
    latency: float | None


@dataclass(frozen=True)
class LoraVersion:
    session: str
    version: int
    file: str
    kohya_file: str | None
    kind: str
    answers_used: int
    drift: float | None
    metadata: dict


def validate_session_id(session: str) -> str:
    if not isinstance(session, str) or not _SESSION_ID.match(session) or ".." in session:
        raise StoreError(
            f"invalid session id {session!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return session


def _blob(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype="<f8").tobytes()


def _unblob(blob: bytes | None, shape: tuple[int, ...] | None = None) -> np.ndarray | None:
    if blob is None:
        return None
    array = np.frombuffer(blob, dtype="<f8").copy()
    return array.reshape(shape) if shape else array


def image_hash(image: np.ndarray) -> str:
    """SHA-256 of a uint8 ``[H, W, C]`` image's shape and pixels (independent of PNG encoder versions)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    return sha256(str(image.shape).encode() + image.tobytes()).hexdigest()


class PreferenceStore:
    """One SQLite file per store; open it from any number of processes.

    Args:
        path: database file (created with its parent folder if missing).
        timeout: seconds to wait for another process's write lock.
    """

    def __init__(self, path: str | Path, timeout: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.image_dir = self.path.with_name(self.path.stem + "_images")
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA foreign_keys = ON")
            app_id = self._db.execute("PRAGMA application_id").fetchone()[0]
            if existed and app_id != APPLICATION_ID:
                has_tables = self._db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
                if has_tables:
                    raise StoreError(
                        f"{self.path} is an SQLite database but not an edpbrl preference store; choose another path"
                    )
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._migrate()
        except sqlite3.DatabaseError as error:
            raise StoreError(
                f"{self.path} is not a readable edpbrl store ({error}); it may be corrupt or another kind of "
                "file: move it aside and start a new store, or restore a backup"
            ) from error

    # ------------------------------------------------------------------ plumbing
    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer edpbrl (schema {version} > {SCHEMA_VERSION}); upgrade edpbrl"
            )
        while version < SCHEMA_VERSION:
            with self._write():
                # Another process may have migrated while we waited for the lock.
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version >= SCHEMA_VERSION:
                    break
                for statement in filter(str.strip, MIGRATIONS[version].split(";")):
                    self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version + 1}")
                self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            version += 1

    def _write(self):
        """A write transaction that takes the lock up front (BEGIN IMMEDIATE) and commits on success."""
        store = self

        class _Tx:
            def __enter__(self):
                store._db.execute("BEGIN IMMEDIATE")
                return store._db

            def __exit__(self, kind, value, tb):
                store._db.execute("COMMIT" if kind is None else "ROLLBACK")
                return False

        return _Tx()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PreferenceStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def integrity_check(self) -> str:
        return self._db.execute("PRAGMA integrity_check").fetchone()[0]

    # ------------------------------------------------------------------ sessions
    def create_session(self, session: str, user: str = "default", config: dict | None = None) -> SessionRecord:
        validate_session_id(session)
        if not isinstance(user, str) or not user.strip():
            raise StoreError("user must be a non-empty string")
        config = dict(config or {})
        with self._write() as db:
            if db.execute("SELECT 1 FROM sessions WHERE id = ?", (session,)).fetchone():
                raise StoreError(f"session {session!r} already exists; open it with get_session or pick a new id")
            db.execute(
                "INSERT INTO sessions (id, user, created, config) VALUES (?, ?, ?, ?)",
                (session, user, time.time(), json.dumps(config)),
            )
        return self.get_session(session)

    def get_session(self, session: str) -> SessionRecord:
        validate_session_id(session)
        row = self._db.execute("SELECT id, user, created, config FROM sessions WHERE id = ?", (session,)).fetchone()
        if row is None:
            known = [r[0] for r in self._db.execute("SELECT id FROM sessions ORDER BY created LIMIT 20")]
            raise StoreError(f"unknown session {session!r} in {self.path}; known sessions: {known or 'none'}")
        return SessionRecord(row[0], row[1], row[2], json.loads(row[3]))

    def has_session(self, session: str) -> bool:
        validate_session_id(session)
        return self._db.execute("SELECT 1 FROM sessions WHERE id = ?", (session,)).fetchone() is not None

    def list_sessions(self) -> list[SessionRecord]:
        rows = self._db.execute("SELECT id, user, created, config FROM sessions ORDER BY created").fetchall()
        return [SessionRecord(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def update_session_config(self, session: str, **changes) -> SessionRecord:
        record = self.get_session(session)
        config = {**record.config, **changes}
        with self._write() as db:
            db.execute("UPDATE sessions SET config = ? WHERE id = ?", (json.dumps(config), session))
        return self.get_session(session)

    # ------------------------------------------------------------------ candidates
    def _save_image(self, image: np.ndarray) -> tuple[str, str]:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
            raise StoreError(f"images must be uint8 [H, W, C] arrays, got {image.dtype} {image.shape}")
        digest = image_hash(image)
        relative = Path(digest[:2]) / f"{digest}.png"
        target = self.image_dir / relative
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer, format="PNG")
            tmp = target.with_suffix(f".{time.monotonic_ns()}.tmp")
            tmp.write_bytes(buffer.getvalue())
            tmp.replace(target)
        return digest, relative.as_posix()

    def add_candidates(
        self,
        session: str,
        prompts: Sequence[str],
        features: np.ndarray | None = None,
        images: Sequence[np.ndarray] | None = None,
        seeds: Sequence[int | None] | None = None,
        generator: dict | None = None,
    ) -> list[int]:
        """Store candidates (images as uint8 ``[H, W, C]``, features ``[n, d]``) and return their ids."""
        self.get_session(session)
        n = len(prompts)
        if n == 0:
            raise StoreError("add_candidates needs at least one candidate")
        if features is not None:
            features = np.asarray(features, dtype=np.float64)
            if features.ndim != 2 or len(features) != n or not np.isfinite(features).all():
                raise StoreError(f"features must be a finite [{n}, d] array, got shape {features.shape}")
            dims = self._feature_dims(session)
            if dims and dims != {features.shape[1]}:
                raise StoreError(
                    f"session {session!r} stores {sorted(dims)[0]}-d features but got {features.shape[1]}-d; "
                    "use the session's feature encoder or start a new session"
                )
        if images is not None and len(images) != n:
            raise StoreError(f"got {len(images)} images for {n} prompts")
        if seeds is not None and len(seeds) != n:
            raise StoreError(f"got {len(seeds)} seeds for {n} prompts")
        saved = [self._save_image(im) for im in images] if images is not None else [(None, None)] * n
        generator_json = json.dumps(generator or {})
        ids = []
        now = time.time()
        with self._write() as db:
            for i in range(n):
                cursor = db.execute(
                    "INSERT INTO candidates (session, image_hash, image_path, prompt, seed, generator, features, created)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        session,
                        saved[i][0],
                        saved[i][1],
                        str(prompts[i]),
                        None if seeds is None or seeds[i] is None else int(seeds[i]),
                        generator_json,
                        None if features is None else _blob(features[i]),
                        now,
                    ),
                )
                ids.append(int(cursor.lastrowid))
        return ids

    def _feature_dims(self, session: str) -> set[int]:
        rows = self._db.execute(
            "SELECT DISTINCT length(features) FROM candidates WHERE session = ? AND features IS NOT NULL", (session,)
        ).fetchall()
        return {r[0] // 8 for r in rows}

    def set_features(self, candidate_ids: Sequence[int], features: np.ndarray) -> None:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or len(features) != len(candidate_ids) or not np.isfinite(features).all():
            raise StoreError("features must be a finite [n, d] array, one row per candidate id")
        with self._write() as db:
            for cid, row in zip(candidate_ids, features):
                db.execute("UPDATE candidates SET features = ? WHERE id = ?", (_blob(row), int(cid)))

    def candidates(self, session: str, ids: Sequence[int] | None = None) -> list[CandidateRecord]:
        self.get_session(session)
        rows = self._db.execute(
            "SELECT id, session, image_hash, image_path, prompt, seed, generator FROM candidates WHERE session = ?"
            " ORDER BY id",
            (session,),
        ).fetchall()
        records = {r[0]: CandidateRecord(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows}
        if ids is None:
            return list(records.values())
        missing = [i for i in ids if i not in records]
        if missing:
            raise StoreError(f"candidates {missing} are not part of session {session!r}")
        return [records[i] for i in ids]

    def count_candidates(self, session: str) -> int:
        self.get_session(session)
        return int(self._db.execute("SELECT COUNT(*) FROM candidates WHERE session = ?", (session,)).fetchone()[0])

    def candidate_features(self, session: str, ids: Sequence[int] | None = None) -> tuple[list[int], np.ndarray]:
        """(ids, features ``[n, d]``) of the session's candidates that have features."""
        self.get_session(session)
        rows = self._db.execute(
            "SELECT id, features FROM candidates WHERE session = ? AND features IS NOT NULL ORDER BY id", (session,)
        ).fetchall()
        table = {r[0]: _unblob(r[1]) for r in rows}
        ids = list(table) if ids is None else list(ids)
        missing = [i for i in ids if i not in table]
        if missing:
            raise StoreError(f"candidates {missing} of session {session!r} are unknown or have no features")
        return ids, np.stack([table[i] for i in ids]) if ids else np.zeros((0, 0))

    def image_file(self, candidate: CandidateRecord) -> Path | None:
        return None if candidate.image_path is None else self.image_dir / candidate.image_path

    def load_image(self, candidate: CandidateRecord) -> np.ndarray:
        path = self.image_file(candidate)
        if path is None or not path.exists():
            raise StoreError(f"candidate {candidate.id} has no stored image (expected {path})")
        return np.asarray(Image.open(path).convert("RGB"))

    # ------------------------------------------------------------------ questions
    def add_query(
        self,
        session: str,
        candidate_ids: Sequence[int],
        strategy: str = "manual",
        information_gain: float | None = None,
    ) -> QueryRecord:
        """Queue a question (pending until answered, skipped or withdrawn)."""
        candidate_ids = tuple(int(c) for c in candidate_ids)
        if len(candidate_ids) < 1 or len(set(candidate_ids)) != len(candidate_ids):
            raise StoreError(f"a question needs distinct candidates, got {candidate_ids}")
        self.candidates(session, candidate_ids)
        if information_gain is not None and not np.isfinite(information_gain):
            raise StoreError("information_gain must be finite")
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO queries (session, candidates, strategy, information_gain, status, created)"
                " VALUES (?, ?, ?, ?, 'pending', ?)",
                (session, json.dumps(candidate_ids), str(strategy), information_gain, time.time()),
            )
            query_id = int(cursor.lastrowid)
        return self.get_query(query_id)

    def get_query(self, query_id: int) -> QueryRecord:
        row = self._db.execute(
            "SELECT id, session, candidates, strategy, information_gain, status, created FROM queries WHERE id = ?",
            (int(query_id),),
        ).fetchone()
        if row is None:
            raise StoreError(f"unknown question {query_id}; list open questions with pending_queries()")
        return QueryRecord(row[0], row[1], tuple(json.loads(row[2])), row[3], row[4], row[5], row[6])

    def pending_queries(self, session: str | None = None) -> list[QueryRecord]:
        sql = "SELECT id FROM queries WHERE status = 'pending'"
        args: tuple = ()
        if session is not None:
            self.get_session(session)
            sql, args = sql + " AND session = ?", (session,)
        return [self.get_query(r[0]) for r in self._db.execute(sql + " ORDER BY id", args)]

    def withdraw_query(self, query_id: int) -> QueryRecord:
        with self._write() as db:
            query = self.get_query(query_id)
            if query.status != "pending":
                raise StoreError(
                    f"question {query_id} is already {query.status}; only pending questions can be withdrawn"
                )
            db.execute("UPDATE queries SET status = 'withdrawn' WHERE id = ?", (query.id,))
        return self.get_query(query_id)

    # ------------------------------------------------------------------ answers
    def submit_answer(self, query_id: int, choice, latency: float | None = None) -> AnswerRecord:
        """Record an answer; returns only after it is committed to disk."""
        with self._write() as db:
            query = self.get_query(query_id)
            if query.status != "pending":
                raise StoreError(
                    f"question {query_id} is {query.status}; it cannot take another answer (its answer is kept)"
                )
            try:
                stored = answers.normalise(choice, len(query.candidates))
            except answers.AnswerError as error:
                raise StoreError(str(error)) from error
            if latency is not None and (not np.isfinite(latency) or latency < 0):
                raise StoreError("latency must be a finite number of seconds >= 0")
            cursor = db.execute(
                "INSERT INTO answers (query, session, choice, created, latency) VALUES (?, ?, ?, ?, ?)",
                (query.id, query.session, stored, time.time(), latency),
            )
            status = "skipped" if stored == "skip" else "answered"
            db.execute("UPDATE queries SET status = ? WHERE id = ?", (status, query.id))
            answer_id = int(cursor.lastrowid)
        return self.get_answer(answer_id)

    def get_answer(self, answer_id: int) -> AnswerRecord:
        row = self._db.execute(
            "SELECT a.id, a.query, a.session, q.candidates, a.choice, a.created, a.latency FROM answers a"
            " JOIN queries q ON q.id = a.query WHERE a.id = ?",
            (int(answer_id),),
        ).fetchone()
        if row is None:
            raise StoreError(f"unknown answer {answer_id}")
        return AnswerRecord(row[0], row[1], row[2], tuple(json.loads(row[3])), row[4], row[5], row[6])

    def answer_to(self, query_id: int) -> AnswerRecord | None:
        """The answer a question got, or None."""
        row = self._db.execute("SELECT id FROM answers WHERE query = ?", (int(query_id),)).fetchone()
        return None if row is None else self.get_answer(row[0])

    def answers(self, session: str) -> list[AnswerRecord]:
        self.get_session(session)
        ids = self._db.execute("SELECT id FROM answers WHERE session = ? ORDER BY id", (session,)).fetchall()
        return [self.get_answer(r[0]) for r in ids]

    # ------------------------------------------------------------------ reward snapshots and LoRA versions
    def save_snapshot(
        self, session: str, theta: np.ndarray, covariance: np.ndarray, bias: float, n_answers: int
    ) -> None:
        self.get_session(session)
        theta, covariance = np.asarray(theta, dtype=np.float64), np.asarray(covariance, dtype=np.float64)
        if covariance.shape != (len(theta), len(theta)):
            raise StoreError("covariance must be [d, d] for a d-vector theta")
        with self._write() as db:
            db.execute(
                "INSERT INTO reward_snapshots (session, created, n_answers, theta, covariance, bias) VALUES (?, ?, ?, ?, ?, ?)",
                (session, time.time(), int(n_answers), _blob(theta), _blob(covariance), float(bias)),
            )

    def latest_snapshot(self, session: str) -> dict | None:
        self.get_session(session)
        row = self._db.execute(
            "SELECT n_answers, theta, covariance, bias, created FROM reward_snapshots WHERE session = ?"
            " ORDER BY id DESC LIMIT 1",
            (session,),
        ).fetchone()
        if row is None:
            return None
        theta = _unblob(row[1])
        return {
            "n_answers": row[0],
            "theta": theta,
            "covariance": _unblob(row[2], (len(theta), len(theta))),
            "bias": row[3],
            "created": row[4],
        }

    def add_lora_version(
        self,
        session: str,
        file: str,
        kind: str,
        answers_used: int,
        drift: float | None = None,
        kohya_file: str | None = None,
        metadata: dict | None = None,
    ) -> LoraVersion:
        self.get_session(session)
        with self._write() as db:
            version = db.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM lora_versions WHERE session = ?", (session,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO lora_versions (session, version, created, file, kohya_file, kind, answers_used, drift, metadata)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session,
                    version,
                    time.time(),
                    str(file),
                    kohya_file,
                    kind,
                    int(answers_used),
                    None if drift is None else float(drift),
                    json.dumps(metadata or {}),
                ),
            )
        return self.lora_versions(session)[-1]

    def next_lora_version(self, session: str) -> int:
        self.get_session(session)
        return self._db.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM lora_versions WHERE session = ?", (session,)
        ).fetchone()[0]

    def lora_versions(self, session: str) -> list[LoraVersion]:
        self.get_session(session)
        rows = self._db.execute(
            "SELECT session, version, file, kohya_file, kind, answers_used, drift, metadata FROM lora_versions"
            " WHERE session = ? ORDER BY version",
            (session,),
        ).fetchall()
        return [LoraVersion(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7])) for r in rows]
