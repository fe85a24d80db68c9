"""builders.progress: the timestamped progress lines and the trainers' optional ones."""

import re

from builders.progress import progress, say


def test_progress_is_one_timestamped_line_on_stderr(capsys):
    progress("wrote search version 3")
    progress("soak: 10 calls", "reliability")
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert re.fullmatch(r"\[build \d\d:\d\d:\d\d\] wrote search version 3", lines[0])
    assert re.fullmatch(r"\[reliability \d\d:\d\d:\d\d\] soak: 10 calls", lines[1])
    assert len(lines) == 2


def test_say_prints_only_when_enabled(capsys):
    say(False, "ranker: auc 0.7")
    say(True, "two-tower: recall 0.5")
    assert capsys.readouterr() == ("", "two-tower: recall 0.5\n")
