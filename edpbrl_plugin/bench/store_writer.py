"""A writer process for the store's crash and concurrency checks: answers questions, acknowledging each.

Usage: python -m edpbrl_plugin.bench.store_writer DB SESSION N_QUESTIONS
Prints "ack <question id> <choice>" only after submit_answer returned (the answer is committed).
"""

import sys

from edpbrl_plugin.storage.store import PreferenceStore

db, session, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = PreferenceStore(db)
if not store.has_session(session):
    store.create_session(session, user=f"user-{session}")
for i in range(n):
    ids = store.add_candidates(session, [f"p{i}a", f"p{i}b"], features=[[float(i), 1.0], [0.0, float(i)]])
    query = store.add_query(session, ids, strategy="d_optimal", information_gain=0.1)
    choice = i % 2
    store.submit_answer(query.id, choice)
    print(f"ack {query.id} {choice}", flush=True)
