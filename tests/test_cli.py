"""The command line: a bad argument value ends with status 2 and one error line, before anything loads."""

from __future__ import annotations

import pytest

from edpbrl_plugin import __version__
from edpbrl_plugin.cli import main


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["demo", "--k", "1"], "--k must be an integer >= 2"),
        (["demo", "--k", "30"], "larger than the --candidates pool of 24"),
        (["demo", "--user", "nobody"], "unknown simulated user nobody; choose from blue"),
        (["demo", "--rounds", "0"], "argument --rounds: expected a whole number >= 1, got '0'"),
        (["demo", "--seed", "x"], "argument --seed: expected a whole number >= 0, got 'x'"),
        (["bench", "align", "--methods", "bogus"], "unknown align method 'bogus'"),
        (["bench", "align", "--users", "blue,nobody"], "unknown simulated user nobody"),
        (["bench", "queries", "--strategies", "nope"], "unknown strategy nope; choose from"),
        (["bench", "queries", "--settings", "Z"], "unknown setting Z; choose from A, B"),
        (["bench", "update", "--settings", "default;bogus=1"], "--settings: bad update setting 'bogus=1'"),
        (["bench", "update", "--settings", "steps=0"], "--settings: steps and batch_size must be >= 1"),
        (["demo", "--model", "digits", "--prompt", "a seven"], "--model digits is unconditional"),
        (["demo", "--model", "digits", "--user", "blue"], "unknown simulated user blue; choose from papa-digits"),
        (["bench", "align", "--model", "digits", "--users", "blue"], "choose from papa-digits"),
        (["bench", "align", "--model", "digits", "--methods", "epapa@1e-5"], "unknown align method 'epapa@1e-5'"),
    ],
)
def test_a_bad_argument_value_exits_2_with_one_error_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err
    assert [line for line in err.splitlines() if "error:" in line] == [err.splitlines()[-1]]
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"edpbrl {__version__}"


def test_a_real_data_model_without_its_weights_exits_2_saying_how_to_train_them(capsys, tmp_path, monkeypatch):
    from edpbrl_plugin.models.digits import weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "none")
    for argv in (["demo", "--model", "fashion"], ["bench", "align", "--model", "digits", "--seeds", "1"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and "models.digits.train generator --dataset" in err and "Traceback" not in err
