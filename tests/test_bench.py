"""Benchmark bookkeeping: the summaries the README's tables are copied from."""

import numpy as np
import pytest

from edpbrl_plugin.bench.align import summarise
from edpbrl_plugin.bench.common import mean_ci


def test_share_intervals_stay_inside_zero_one():
    ci = mean_ci(np.array([[0.2, 1.0], [1.0, 1.0], [0.9, 1.0]]), bounds=(0.0, 1.0))
    assert ci["hi"][0] == 1.0 and 0.0 <= ci["lo"][0] < ci["mean"][0]
    assert ci["lo"][1] == ci["hi"][1] == 1.0


def _run(method: str, seed: int, shares: list[float], step: int = 10) -> dict:
    curve = [{"actions": i * step, "share": s, "utility": 2 * s, "drift": 0.01 * i} for i, s in enumerate(shares)]
    return {"user": "blue", "method": method, "seed": seed, "curve": curve, "updates": [{"seconds": 1.0}]}


def test_summary_picks_papas_best_rate_and_the_actions_ours_needs_to_match_it():
    runs = [_run("ours", s, [0.1, 0.3 + 0.1 * s, 0.9]) for s in range(2)]
    runs += [_run("papa@0.0001", s, [0.1, 0.2, 0.25, 0.3]) for s in range(2)]
    runs += [_run("papa@0.001", s, [0.1, 0.4, 0.1, 0.0]) for s in range(2)]
    summary = summarise(runs, ["ours", "papa@0.0001", "papa@0.001"])["blue"]
    assert summary["papa_best"] == "papa@0.0001" and summary["papa_final_share"] == 0.3 and summary["papa_budget"] == 30
    assert summary["ours_actions_to_papa_final"] == 10  # ours' mean share at 10 actions is 0.35
    assert summary["papa_peak_share"] == 0.4 and summary["ours_actions_to_papa_peak"] == 20
    assert summary["ours"]["n_seeds"] == 2 and summary["ours"]["share"]["hi"][-1] <= 1.0
    assert summary["papa@0.001"]["final_share_per_seed"] == {0: 0.0, 1: 0.0}  # a runaway seed shows by itself


def test_the_markdown_table_gives_each_methods_final_share_and_every_seed():
    from edpbrl_plugin.bench.align import format_markdown

    runs = [_run("ours", s, [0.1, 0.6, 0.8 + 0.1 * s]) for s in range(2)]
    table = format_markdown(summarise(runs, ["ours"]))
    assert table.startswith("blue:") and "| `ours` | 2 | 20 | 0.10 → **0.85**" in table and "| 0.80, 0.90 |" in table


def test_the_plot_spreads_out_a_ten_times_longer_peer_and_marks_each_seeds_final_share(tmp_path):
    from edpbrl_plugin.bench.align import plot

    runs = [_run("ours", s, [0.1, 0.6, 0.8 + 0.05 * s]) for s in range(2)]
    runs += [_run("papa-full@1e-05", s, [0.1] + [0.2] * 30, step=10) for s in range(2)]
    ax = plot(summarise(runs, ["ours", "papa-full@1e-05"]), tmp_path / "align.png").axes[0]
    assert (tmp_path / "align.png").stat().st_size > 0 and ax.get_xscale() == "symlog"
    dots = [c.get_offsets() for c in ax.collections if len(c.get_offsets()) == 2]  # the per-seed scatters
    assert sorted(float(d[:, 1].max()) for d in dots) == pytest.approx([0.2, 0.85])
    short = plot(summarise(runs[:2], ["ours"]), tmp_path / "ours.png").axes[0]
    assert short.get_xscale() == "linear"  # one method alone keeps the plain axis


def test_an_unknown_align_method_or_user_is_refused_before_anything_runs(tmp_path):
    from edpbrl_plugin.bench.align import run

    for bad in ("papa", "papa@fast", "oursfresh", "papa@-1", "papa@0", "papa@nan", "epapa@1e-5", "papa-full"):
        with pytest.raises(ValueError, match="unknown align method"):
            run(tmp_path, users=["blue"], seeds=1, methods=["ours", bad])
    assert not (tmp_path / "align_runs.jsonl").exists()
    with pytest.raises(ValueError, match="unknown simulated user"):
        run(tmp_path, users=["blue", "likes-red"], seeds=1, methods=["ours"])


def test_resuming_with_some_methods_keeps_every_recorded_method_in_the_summary(tmp_path):
    import json

    from edpbrl_plugin.bench.align import run

    records = [
        _run("papa@3e-05", 0, [0.1, 0.1, 0.2]),
        _run("ours-k4", 0, [0.1, 0.8]),
        _run("ours", 0, [0.1, 0.9]),
        _run("ours-fresh", 0, [0.1, 0.5]),
    ]
    (tmp_path / "align_runs.jsonl").write_text(
        "".join(json.dumps({**r, "key": f"blue|{r['method']}|0"}) + "\n" for r in records)
    )
    report = run(tmp_path, users=["blue"], seeds=0, methods=["ours"])  # nothing left to run: summarise only
    assert report["methods"] == ["ours", "ours-fresh", "ours-k4", "papa@3e-05"]
    assert set(json.loads((tmp_path / "align.json").read_text())["summary"]["blue"]) >= {
        "ours",
        "ours-fresh",
        "papa@3e-05",
    }


def test_each_of_our_align_methods_runs_the_loop_with_its_own_settings(monkeypatch):
    from edpbrl_plugin.bench import align

    calls = {}
    monkeypatch.setattr(align, "_BENCH", object())  # no encoder or pipeline needed: run_loop is replaced

    def run_loop(bench, user, seed, *sizes, **settings):
        calls[user] = settings
        return {"curve": [], "updates": [], "before": [], "after": [], "quality": {}, "base_quality": {}}

    monkeypatch.setattr(align, "run_loop", run_loop)
    settings = {"budget": 2, "per_round": 1, "candidates": 4, "eval_samples": 4, "update": {}, "threads": 1}
    settings["model"] = "shapes"
    for method in align.OURS_METHODS:
        align._run_job((method, method, 0, settings))  # user = method name, to tell the calls apart
    configs = {user: settings.pop("config") for user, settings in calls.items()}
    assert calls["ours"] == {} and calls["random"] == {"strategy": "random"}
    assert calls["ours-fresh"] == {"base_share": 0.5} and calls["ours-k4"] == {"k": 4}
    assert calls["ours-check"] == {"checks": 2}
    assert not any(c.warm_start for c in configs.values())  # every update starts from the base model by default
    assert all(c.seed == 0 and c.method == "default" for c in configs.values())


def test_a_spent_time_budget_starts_no_run_and_says_how_many_are_left(tmp_path, capsys):
    from edpbrl_plugin.bench.align import run

    report = run(tmp_path, users=["blue"], seeds=2, methods=["ours"], budget_minutes=1e-9)
    assert report["ran_now"]["runs_left"] == 2 and report["summary"] == {}
    assert "with 2 runs left; run again to resume" in capsys.readouterr().out


def test_runs_with_other_update_settings_are_never_mixed_into_one_summary(tmp_path):
    import json

    from edpbrl_plugin.bench.align import run

    record = {**_run("ours", 0, [0.1, 0.9]), "key": "blue|ours|0", "update": {"steps": 30}}
    (tmp_path / "align_runs.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="other update settings"):
        run(tmp_path, users=["blue"], seeds=0, methods=["ours"])
    with pytest.raises(TypeError):
        run(tmp_path / "other", users=["blue"], seeds=0, methods=["ours"], update={"stepz": 30})
    assert run(tmp_path, users=["blue"], seeds=1, methods=["ours"], update={"steps": 30})["ran_now"]["runs_left"] == 0


def test_the_baseline_comparison_says_whether_each_final_share_is_inside_the_old_interval():
    from edpbrl_plugin.bench.align import format_comparison

    old = summarise([_run("ours", s, [0.1, 0.5 + 0.1 * s]) for s in range(3)], ["ours"])
    inside = summarise([_run("ours", s, [0.1, 0.6]) for s in range(3)], ["ours"])
    below = summarise([_run("ours", s, [0.1, 0.2]) for s in range(3)], ["ours"])
    assert "ours" in format_comparison(inside, old) and ": inside;" in format_comparison(inside, old)
    assert ": BELOW;" in format_comparison(below, old)


def test_the_speed_summary_gives_each_stage_a_before_after_ratio_with_an_interval():
    from edpbrl_plugin.bench.speed import STAGES
    from edpbrl_plugin.bench.speed import summarise as speed_summary

    def record(setting, seed, update):
        seconds = {stage: 1.0 for stage in STAGES} | {"update": update}
        return {"setting": setting, "seed": seed, "rounds": [{"seconds": seconds}], "peak_mb": 500.0}

    runs = [record("before", s, 60.0 + s) for s in range(5)] + [record("after", s, 10.0) for s in range(5)]
    summary = speed_summary(runs)
    ratio = summary["ratio before/after"][0]
    assert ratio["update"]["mean"] == pytest.approx(6.2) and ratio["update"]["lo"] < 6.2 < ratio["update"]["hi"]
    assert ratio["sample"]["mean"] == 1.0 and summary["before"]["rounds"][0]["total"]["mean"] == pytest.approx(68.0)
