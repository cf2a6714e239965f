"""Print the README's table of the personalized model beside the base, from an ``edpbrl bench align`` output.

Usage: ``python scripts/quality_table.py [bench_results/align_issue21/align.json] [method]``. Every number is
``bench align``'s mean over seeds (the 95% interval where it has one); nothing is typed by hand.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench_results/align_issue21/align.json")
method = sys.argv[2] if len(sys.argv) > 2 else "ours"
summary = json.loads(path.read_text())["summary"]


def cell(entry: dict) -> str:
    mean, lo, hi = (entry[k] for k in ("mean", "lo", "hi"))
    mean, lo, hi = (v[-1] if isinstance(v, list) else v for v in (mean, lo, hi))
    return f"{mean:.2f} [{lo:.2f}, {hi:.2f}]"


print(
    "| simulated user | share preferred: base → 30 answers | win rate vs base | well formed: base → tuned "
    "| lowest adherence ratio (attribute) | largest variety TV (attribute) | seeds |"
)
print("|---|---|---|---|---|---|---|")
for user, methods in summary.items():
    data = methods.get(method)
    if not isinstance(data, dict) or "quality" not in data:
        continue
    q = data["quality"]
    adherence = {
        name: v["mean"] / max(q["adherence"]["base_quality"][name]["mean"], 1e-9)
        for name, v in q["adherence"]["quality"].items()
    }
    worst = min(adherence, key=adherence.get)
    variety = q.get("variety", {}).get("quality", {})
    widest = max(variety, key=lambda n: variety[n]["mean"]) if variety else None
    spread = "-" if widest is None else f"{variety[widest]['mean']:.2f} ({widest})"
    print(
        f"| `{user}` | {data['share']['mean'][0]:.2f} → {cell(data['share'])} | {cell(q['win_rate']['quality'])} "
        f"| {q['well_formed']['base_quality']['mean']:.2f} → {cell(q['well_formed']['quality'])} "
        f"| {adherence[worst]:.2f} ({worst}) "
        f"| {spread} | {data['n_seeds']} |"
    )
