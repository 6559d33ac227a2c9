"""Listing a dataset folder: each file's relative path, class, given split, size and mtime, and what cannot be
used with the reason. It stats, never reads. Kept apart from `catalog` (pandas) so the processes that list a
large folder's classes side by side start in tens of milliseconds.

Never raises: files outside a class folder, links to folders (not followed, so no loops), special files and
unreadable entries are named with the reason. Hidden entries (`.graft/`, `.DS_Store`) are left out silently.
"""
from __future__ import annotations

import os
import stat as stat_module
from dataclasses import dataclass, field
from pathlib import Path

from core.base.processes import spawned_pool

SPLITS = ("train", "val", "test")
PROCESS_FILES = 100_000  # from this many files (as last scanned) the classes are listed in processes side by side
# (the stat calls of one process queue for its GIL: two processes list a million files in about half the time)


@dataclass
class Listing:
    """One list a column, in the folder's order (classes sorted, then names), and the problems found. Class and
    given split come in runs, one a class folder: (label, split, files)."""

    paths: list[str] = field(default_factory=list)
    runs: list[tuple[str, str, int]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes: list[int] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # relative path, reason, detail

    def extend(self, part: _Part, label: str, split: str) -> None:
        self.paths += part.paths
        self.runs.append((label, split, len(part.paths)))
        self.sizes += part.sizes
        self.mtimes += part.mtimes
        self.problems += part.problems


@dataclass
class _Part:
    """What one folder (and what is below it) holds: its files (one class, one split) and problems."""

    root: str
    paths: list[str] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    mtimes: list[int] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    def rel(self, path: str) -> str:
        return path[len(self.root) + 1:].replace(os.sep, "/") or "."

    def problem(self, path: str, reason: str, detail: str) -> None:
        self.problems.append((self.rel(path), reason, detail))

    def folder(self, folder: str, label: str | None, split: str) -> list[tuple[str, str]]:
        """List `folder`. Below the top (`label` None, whose sub-folders are classes, returned unlisted) every
        file is the class's, however deep. Each folder's names are listed and sorted in one call and each entry
        stat'ed relative to the open folder: no DirEntry objects, no full-path lookups."""
        paths, sizes, mtimes = self.paths, self.sizes, self.mtimes
        stat, is_file, is_dir = os.stat, stat_module.S_ISREG, stat_module.S_ISDIR
        classes: list[tuple[str, str]] = []
        stack = [folder]
        while stack:
            current = stack.pop()
            subfolders = []
            prefix = self.rel(current) + "/"
            try:
                fd = os.open(current, os.O_RDONLY | os.O_DIRECTORY)
            except OSError as err:
                self.problem(current, "unreadable folder", err.strerror or type(err).__name__)
                continue
            try:
                names = sorted(n for n in os.listdir(fd) if not n.startswith("."))
                for name in names:
                    try:
                        mode_etc = stat(name, dir_fd=fd, follow_symlinks=False)
                    except OSError:
                        mode_etc = None
                    if mode_etc is not None and label is not None and is_file(mode_etc.st_mode):
                        paths.append(prefix + name)
                        sizes.append(mode_etc.st_size)
                        mtimes.append(mode_etc.st_mtime_ns)
                    elif mode_etc is not None and is_dir(mode_etc.st_mode):
                        subfolders.append(os.path.join(current, name))
                    else:
                        self.file(os.path.join(current, name), label, split)
            except OSError as err:
                self.problem(current, "unreadable folder", err.strerror or type(err).__name__)
            finally:
                os.close(fd)
            if label is None:
                classes += [(path, os.path.basename(path)) for path in subfolders]
            else:
                stack.extend(reversed(subfolders))
        return classes

    def file(self, path: str, label: str | None, split: str) -> None:
        """A file that is not a regular file in a class folder, or could not be stat'ed: named, or listed."""
        try:
            if os.path.islink(path) and os.path.isdir(path):
                return self.problem(path, "link to a folder", "not followed (links can loop)")
            if not os.path.isfile(path):
                kind = "broken link" if os.path.islink(path) else "not a regular file"
                return self.problem(path, kind, "")
            info = os.stat(path)
        except OSError as err:
            return self.problem(path, "unreadable", err.strerror or type(err).__name__)
        if label is None:
            return self.problem(path, "not in a class folder",
                                "files must sit in ROOT/<class>/" + ("" if not split else f" (here {split}/<class>/)"))
        self.paths.append(self.rel(path))
        self.sizes.append(info.st_size)
        self.mtimes.append(info.st_mtime_ns)


def list_class(root: str, folder: str, label: str, split: str) -> _Part:
    """One class folder's files and problems (a listing worker's task)."""
    part = _Part(root)
    part.folder(folder, label, split)
    return part


def walk(root: Path, layout: str, workers: int = 1) -> Listing:
    """The listing of `root` ("folders": ROOT/<class>/...; "splits": ROOT/{train,val,test}/<class>/...). With
    `workers` > 1 the class folders are listed in that many processes (the order is the same)."""
    top, base = _Part(str(root)), str(root)
    plan: list[tuple[str, str, str] | _Part] = []  # in order: class folders to list, and tops' problems found
    if layout == "folders":
        plan += [top, *((path, label, "") for path, label in top.folder(base, None, ""))]
        top = _Part(base)
    else:
        for name in _visible_names(top, base):
            path = os.path.join(base, name)
            if not os.path.isdir(path) or os.path.islink(path):
                top.file(path, None, "")
            elif name.lower() in SPLITS:
                plan.append(top)
                plan += [(folder, label, name.lower()) for folder, label in top.folder(path, None, name.lower())]
                top = _Part(base)
            else:
                top.problem(path, "folder outside train/val/test",
                            "this dataset gives its own split, so only those three folders are used")
    plan.append(top)
    tasks = [step for step in plan if isinstance(step, tuple)]
    if workers > 1 and len(tasks) > 1:
        with spawned_pool(min(workers, len(tasks))) as pool:
            parts = iter(list(pool.map(list_class, [base] * len(tasks), *zip(*tasks))))
    else:
        parts = iter([list_class(base, *task) for task in tasks])
    listing = Listing()
    for step in plan:
        if isinstance(step, tuple):
            listing.extend(next(parts), step[1], step[2])
        else:
            listing.problems += step.problems
    return listing


def _visible_names(part: _Part, folder: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(folder) if not n.startswith("."))
    except OSError as err:
        part.problem(folder, "unreadable folder", err.strerror or type(err).__name__)
        return []
