"""The SQLite preference store: durability under SIGKILL, concurrency, migrations, export, bad input."""

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edpbrl_plugin.bench.store import crash_trials, start_writer
from edpbrl_plugin.learning import answers
from edpbrl_plugin.storage import exchange
from edpbrl_plugin.storage.store import MIGRATIONS, SCHEMA_VERSION, PreferenceStore, StoreError


@pytest.fixture
def store(tmp_path):
    with PreferenceStore(tmp_path / "prefs.db") as s:
        s.create_session("s1", user="ana", config={"encoder": "embedded", "strategy": "d_optimal"})
        yield s


def add_pair(store, session="s1", prompts=("a", "b")):
    images = [np.full((4, 4, 3), i * 40, np.uint8) for i in range(len(prompts))]
    ids = store.add_candidates(
        session, list(prompts), features=np.eye(len(prompts), 3), images=images, seeds=[1, 2][: len(prompts)]
    )
    return store.add_query(session, ids, strategy="d_optimal", information_gain=0.2)


def test_answers_round_trip_and_restore_the_engine_answers(store):
    q1, q2 = add_pair(store), add_pair(store, prompts=("c", "d"))
    store.submit_answer(q2.id, "tie", latency=1.5)
    store.submit_answer(q1.id, 1)
    assert [q.status for q in (store.get_query(q1.id), store.get_query(q2.id))] == ["answered", "answered"]
    records = store.answers("s1")
    assert [(r.query, r.choice) for r in records] == [(q2.id, "tie"), (q1.id, "1")]
    ids, features = store.candidate_features("s1")
    assert [answers.to_outcome(r.choice) for r in records] == ["tie", 1]
    assert answers.label(records[1].choice, 2) == "B" and answers.label("both_bad", 2) == "both bad"
    assert features.shape == (4, 3)


def test_reopening_restores_pending_questions_for_answer_later(tmp_path, store):
    q = add_pair(store)
    store.close()
    with PreferenceStore(tmp_path / "prefs.db") as again:
        assert [p.id for p in again.pending_queries("s1")] == [q.id]
        again.submit_answer(q.id, "skip")
        assert again.get_query(q.id).status == "skipped" and again.pending_queries() == []


def test_images_are_stored_once_by_content_hash(store):
    q = add_pair(store)
    again = add_pair(store)
    first, second = store.candidates("s1", q.candidates + again.candidates)[0::2]
    assert first.image_hash == second.image_hash and store.image_file(first).exists()
    np.testing.assert_array_equal(store.load_image(first), np.zeros((4, 4, 3), np.uint8))


def test_double_answers_withdrawn_and_unknown_questions_are_refused_and_keep_the_first_answer(store):
    q = add_pair(store)
    store.submit_answer(q.id, 0)
    with pytest.raises(StoreError, match="cannot take another answer"):
        store.submit_answer(q.id, 1)
    assert [a.choice for a in store.answers("s1")] == ["0"]
    w = add_pair(store)
    store.withdraw_query(w.id)
    with pytest.raises(StoreError, match="withdrawn"):
        store.submit_answer(w.id, 0)
    with pytest.raises(StoreError, match="unknown question"):
        store.submit_answer(9999, 0)
    for bad in (2, "C", "maybe", "like", 1.5):
        with pytest.raises(StoreError):
            store.submit_answer(add_pair(store).id, bad)
    assert len(store.answers("s1")) == 1


def test_the_widgets_letters_name_options(store):
    """Scripts may answer with the letters the widget shows: A is option 0, B option 1."""
    for letter, stored in (("A", "0"), ("b", "1"), (" B ", "1")):
        assert store.submit_answer(add_pair(store).id, letter).choice == stored


@pytest.mark.parametrize("session", ["../etc", "a/b", "", "x" * 65, "s1; DROP TABLE answers", "..", ".hidden", None])
def test_bad_session_ids_are_refused(store, session):
    with pytest.raises(StoreError, match="invalid session id"):
        store.create_session(session)
    assert store.has_session("s1")


def test_sql_metacharacters_in_fields_are_data_not_code(store):
    evil = "'); DROP TABLE answers; --"
    store.create_session("s2", user=evil, config={"note": evil})
    ids = store.add_candidates("s2", [evil, evil], features=np.zeros((2, 3)))
    store.submit_answer(store.add_query("s2", ids, strategy=evil).id, 0)
    assert store.get_session("s2").user == evil and store.candidates("s2")[0].prompt == evil
    assert len(store.answers("s2")) == 1 and store.integrity_check() == "ok"


def test_unknown_session_and_mismatched_feature_dims_are_clear_errors(store):
    with pytest.raises(StoreError, match="unknown session 'nope'"):
        store.answers("nope")
    add_pair(store)
    with pytest.raises(StoreError, match="3-d features but got 5-d"):
        store.add_candidates("s1", ["x"], features=np.zeros((1, 5)))
    with pytest.raises(StoreError, match="finite"):
        store.add_candidates("s1", ["x"], features=np.array([[np.nan, 0, 0]]))
    with pytest.raises(StoreError, match="already exists"):
        store.create_session("s1")


def test_corrupt_and_foreign_files_are_refused_without_touching_them(tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a readable edpbrl store"):
        PreferenceStore(garbage)
    assert garbage.read_bytes() == b"this is not sqlite" * 100
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE other (x)")
    with pytest.raises(StoreError, match="not an edpbrl preference store"):
        PreferenceStore(foreign)
    with sqlite3.connect(foreign) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("other",)]


def test_a_store_written_by_schema_version_1_opens_and_migrates(tmp_path):
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("PRAGMA user_version = 1")
    db.execute("PRAGMA application_id = 1162104898")
    db.execute("INSERT INTO sessions VALUES ('old', 'bo', 1.0, '{}')")
    db.execute("INSERT INTO candidates (session, prompt, generator, created) VALUES ('old', 'a', '{}', 1.0)")
    db.execute("INSERT INTO candidates (session, prompt, generator, created) VALUES ('old', 'b', '{}', 1.0)")
    db.execute(
        "INSERT INTO queries (session, candidates, strategy, status, created) VALUES ('old', '[1, 2]', 'random', 'answered', 1.0)"
    )
    db.execute("INSERT INTO answers (query, session, choice, created) VALUES (1, 'old', '1', 2.0)")
    db.commit()
    db.close()
    with PreferenceStore(path) as store:
        assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        [answer] = store.answers("old")
        assert answer.choice == "1" and answer.latency is None
        store.save_snapshot("old", np.ones(2), np.eye(2), 0.0, 1)
        assert store.latest_snapshot("old")["n_answers"] == 1


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "new.db"
    PreferenceStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer edpbrl"):
        PreferenceStore(path)


def test_export_import_pairs_and_dpo_folders(tmp_path, store):
    q = add_pair(store)
    store.submit_answer(q.id, 1)
    k = store.add_query(
        "s1", store.add_candidates("s1", ["x", "y", "z"], images=[np.full((4, 4, 3), v, np.uint8) for v in (1, 2, 3)])
    )
    store.submit_answer(k.id, 2)
    store.submit_answer(add_pair(store).id, "tie")
    assert exchange.export_pairs(store, "s1", tmp_path / "pairs.jsonl") == 3
    rows = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert rows[0]["winner_prompt"] == "b" and rows[0]["loser_prompt"] == "a" and rows[0]["user"] == "ana"
    with PreferenceStore(tmp_path / "other.db") as other:
        assert exchange.import_pairs(other, tmp_path / "pairs.jsonl", "copy") == 3
        assert exchange.export_pairs(other, "copy", tmp_path / "again.jsonl") == 3
        again = [json.loads(line) for line in (tmp_path / "again.jsonl").read_text().splitlines()]
        assert [(r["winner_prompt"], r["loser_prompt"]) for r in again] == [
            (r["winner_prompt"], r["loser_prompt"]) for r in rows
        ]
    assert exchange.export_dpo_folders(store, "s1", tmp_path / "dpo") == 3
    assert sorted(p.name for p in (tmp_path / "dpo" / "w").iterdir())[:2] == ["00000.png", "00000.txt"]


def test_lora_versions_and_snapshots(store):
    assert store.next_lora_version("s1") == 1
    v1 = store.add_lora_version(
        "s1", "a.safetensors", "dpo+rwr", 5, drift=0.01, kohya_file="k.safetensors", metadata={"r": 4}
    )
    v2 = store.add_lora_version("s1", "b.safetensors", "dpo+rwr", 9)
    assert (v1.version, v2.version) == (1, 2) and store.lora_versions("s1")[0].metadata == {"r": 4}
    theta, cov = np.arange(3.0), np.eye(3) * 2
    store.save_snapshot("s1", theta, cov, 0.5, 7)
    snap = store.latest_snapshot("s1")
    np.testing.assert_array_equal(snap["theta"], theta) and np.testing.assert_array_equal(snap["covariance"], cov)


def test_every_acknowledged_answer_survives_sigkill_at_random_moments(tmp_path):
    result = crash_trials(tmp_path / "crash.db", trials=20, seed=7)
    assert result["lost"] == 0 and result["integrity_failures"] == 0
    assert result["acknowledged"] > 20


def test_two_processes_answering_different_sessions_lose_and_cross_nothing(tmp_path):
    db = tmp_path / "shared.db"
    PreferenceStore(db).close()
    writers = {s: start_writer(db, s, 60) for s in ("left", "right")}
    acks = {s: [line.split() for line in w.communicate()[0].splitlines()] for s, w in writers.items()}
    with PreferenceStore(db) as store:
        for session, lines in acks.items():
            stored = {a.query: a.choice for a in store.answers(session)}
            assert len(lines) == 60 and stored == {int(q): c for _, q, c in lines}
            assert all(store.get_query(q).session == session for q in stored)
            assert store.get_session(session).user == f"user-{session}"


def test_the_store_never_imports_torch():
    code = "import sys, edpbrl_plugin.storage.store; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
