"""Which paths of a synced folder are never synced: built-in patterns plus the folder's `.cofferignore`.

`.cofferignore` (at the folder's root) uses git's ignore syntax ("gitwildmatch", gitignore(5)),
matched by the `pathspec` package's GitIgnoreSpec. As in git, a path under an ignored folder is
ignored whatever later patterns say. The `.cofferignore` file itself is synced like any file, so
every device of the account shares the rules.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pathspec

IGNORE_FILE = ".cofferignore"
DAEMON_DIR = ".coffer"
TEMP_SUFFIX = ".coffer-tmp"
BUILT_IN_PATTERNS: tuple[str, ...] = (
    f"/{DAEMON_DIR}/",  # the daemon's own index and state, at the folder's root
    f"*{TEMP_SUFFIX}",  # the daemon's downloads in progress
    ".*.swp", ".*.swo", ".*.swx",  # vim swap files
    "*~",  # editor backups
    ".#*",  # emacs lock files
    ".DS_Store",
)


class IgnoreRules:
    """Built-in patterns plus the folder's `.cofferignore`; reloadable when that file changes.

    Thread-safe: `ignored` may be called from the scanner thread while the watcher reloads.
    """

    def __init__(self, folder: str | Path, user_patterns: list[str] | None = None) -> None:
        """Rules for `folder` with the given user patterns (use `load` to read them from disk)."""
        self.folder = Path(folder)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._user_patterns: list[str] = []
        self._spec = pathspec.GitIgnoreSpec.from_lines(BUILT_IN_PATTERNS)
        self._set_patterns(user_patterns or [])

    @classmethod
    def load(cls, folder: str | Path) -> IgnoreRules:
        """Rules for `folder` with `<folder>/.cofferignore` if it exists (UTF-8; undecodable bytes replaced)."""
        rules = cls(folder)
        rules.reload_if_changed()
        return rules

    @property
    def user_patterns(self) -> list[str]:
        """The lines of `.cofferignore` currently in force."""
        with self._lock:
            return list(self._user_patterns)

    def _set_patterns(self, lines: list[str]) -> None:
        spec = pathspec.GitIgnoreSpec.from_lines([*BUILT_IN_PATTERNS, *lines])
        with self._lock:
            self._user_patterns = lines
            self._spec = spec

    def reload_if_changed(self) -> bool:
        """Re-read `.cofferignore` if its (size, mtime_ns, inode) changed or it appeared/vanished.

        Returns True if the rules were reloaded (the daemon should then rescan the whole folder:
        paths may have become visible or hidden). Raises OSError only for unexpected read errors.
        """
        path = self.folder / IGNORE_FILE
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            stamp = None
        else:
            stamp = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
        if stamp == self._stamp and (stamp is not None or not self._user_patterns):
            return False
        lines: list[str] = []
        if stamp is not None:
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except FileNotFoundError:
                stamp = None
        changed = lines != self.user_patterns
        self._stamp = stamp
        self._set_patterns(lines)
        return changed

    def ignored(self, path: str, is_dir: bool) -> bool:
        """True if the relative '/'-separated `path` (a folder if `is_dir`) must not be synced.

        A path is ignored if it matches, or if any of its parent folders does (git's rule).
        """
        with self._lock:
            spec = self._spec
        parts = path.split("/")
        for depth in range(1, len(parts)):
            if spec.match_file("/".join(parts[:depth]) + "/"):
                return True
        return spec.match_file(path + "/" if is_dir else path)
