"""client.ignore: built-in patterns, .cofferignore (gitignore syntax), parents, reload on change."""

from __future__ import annotations

import os
from pathlib import Path

from client.ignore import IGNORE_FILE, IgnoreRules


def test_built_ins(tmp_path: Path) -> None:
    rules = IgnoreRules.load(tmp_path)
    assert rules.ignored(".coffer", is_dir=True)
    assert rules.ignored(".coffer/index.db", is_dir=False)
    assert not rules.ignored("sub/.coffer", is_dir=True)  # only the root's daemon folder
    assert rules.ignored("docs/report.pdf.coffer-tmp", is_dir=False)
    assert rules.ignored("src/.main.py.swp", is_dir=False)
    assert rules.ignored("notes.txt~", is_dir=False)
    assert rules.ignored("photos/.DS_Store", is_dir=False)
    assert not rules.ignored("docs/report.pdf", is_dir=False)
    assert not rules.ignored(IGNORE_FILE, is_dir=False)


def test_user_patterns_and_parent_folders(tmp_path: Path) -> None:
    (tmp_path / IGNORE_FILE).write_text("build/\n*.log\n!keep.log\n/root-only.txt\n# comment\n")
    rules = IgnoreRules.load(tmp_path)
    assert rules.ignored("build", is_dir=True)
    assert not rules.ignored("build", is_dir=False)  # "build/" matches folders only
    assert rules.ignored("a/build/x/y.o", is_dir=False)
    assert rules.ignored("a.log", is_dir=False)
    assert not rules.ignored("keep.log", is_dir=False)
    assert rules.ignored("root-only.txt", is_dir=False)
    assert not rules.ignored("sub/root-only.txt", is_dir=False)


def test_reload_when_file_changes(tmp_path: Path) -> None:
    rules = IgnoreRules.load(tmp_path)
    assert not rules.reload_if_changed()
    assert not rules.ignored("x.tmp", is_dir=False)

    ignore_file = tmp_path / IGNORE_FILE
    ignore_file.write_text("*.tmp\n")
    assert rules.reload_if_changed()
    assert rules.ignored("x.tmp", is_dir=False)
    assert not rules.reload_if_changed()

    ignore_file.write_text("*.bak\n")
    os.utime(ignore_file, ns=(1, 1))  # a different mtime even on coarse clocks
    assert rules.reload_if_changed()
    assert not rules.ignored("x.tmp", is_dir=False)
    assert rules.ignored("x.bak", is_dir=False)

    ignore_file.unlink()
    assert rules.reload_if_changed()
    assert rules.user_patterns == []
    assert not rules.ignored("x.bak", is_dir=False)
