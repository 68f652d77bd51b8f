"""The one rule for commands that write a folder (`runs.prepare_output_dir`): new, empty or its own
kind; anything else only with --overwrite, and never deleted."""

from __future__ import annotations

import pytest

from bertlottery.errors import UserError
from bertlottery.runs import prepare_output_dir


def test_new_and_empty_folders_are_created_and_marked_as_the_kind(tmp_path):
    new = prepare_output_dir(tmp_path / "a" / "b", "report")
    assert new == tmp_path / "a" / "b" and [p.name for p in new.iterdir()] == [".bertlottery-report"]
    (tmp_path / "empty").mkdir()
    assert [p.name for p in prepare_output_dir(tmp_path / "empty", "report").iterdir()] == [".bertlottery-report"]
    (new / "report.html").write_text("<html>")
    assert prepare_output_dir(new, "report") == new  # its own kind again: no --overwrite needed
    assert (new / "report.html").read_text() == "<html>"  # nothing is deleted here


def test_anything_else_is_refused_in_one_line_and_left_untouched(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a month of work")
    with pytest.raises(UserError, match=r"mine is not empty and was not written by bertlottery for report output; "
                                        r"choose another folder, or pass --overwrite") as error:
        prepare_output_dir(foreign, "report")
    assert "\n" not in str(error.value)
    run = prepare_output_dir(tmp_path / "run", "run")
    (run / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"run holds bertlottery run output, not report output; choose another"):
        prepare_output_dir(run, "report")
    (tmp_path / "file").write_text("x")
    for overwrite in (False, True):
        with pytest.raises(UserError, match="is a file, not a folder"):
            prepare_output_dir(tmp_path / "file", "report", overwrite=overwrite)
    with pytest.raises(UserError, match="Cannot write to .*file/out"):
        prepare_output_dir(tmp_path / "file" / "out", "report")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in run.iterdir()) == [".bertlottery-run", "config.json"]


def test_overwrite_writes_into_a_foreign_folder_without_claiming_it(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a month of work")
    assert prepare_output_dir(foreign, "report", overwrite=True) == foreign
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]  # not marked: the next command asks again
    with pytest.raises(UserError, match="--overwrite"):
        prepare_output_dir(foreign, "report")
    with pytest.raises(ValueError, match="plain name"):
        prepare_output_dir(tmp_path / "x", "../report")
