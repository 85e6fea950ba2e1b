"""The build context: ``.dockerignore`` filtering, source globs, and content digests.

Owns: which context files COPY/ADD may read and a digest of exactly what they read
(for the layer cache). Every source path is resolved inside the context root;
symlinks in the context are copied as symlinks, never followed out of it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import BuildError


@dataclass(frozen=True)
class _Rule:
    regex: re.Pattern[str]
    exclude: bool  # False for "!pattern" (re-include)


def _translate(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax: Go filepath.Match plus ``**`` for any number of dirs."""
    parts = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                parts.append("(?:.*/)?")
            else:
                parts.append(".*")
            continue
        c = pattern[i]
        if c == "*":
            parts.append("[^/]*")
        elif c == "?":
            parts.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 1)
            if j < 0:
                parts.append(re.escape(c))
            else:
                body = pattern[i + 1:j].replace("\\", "\\\\")
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                parts.append(f"[{body}]")
                i = j
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            parts.append(re.escape(pattern[i]))
        else:
            parts.append(re.escape(c))
        i += 1
    # a pattern matching a directory also excludes everything below it
    return re.compile("^" + "".join(parts) + "(?:/.*)?$")


class Context:
    """A build context directory with its ``.dockerignore`` rules."""

    def __init__(self, root: str, dockerfile_rel: str | None = None) -> None:
        self.root = os.path.realpath(root)
        if not os.path.isdir(self.root):
            raise BuildError(f"build context {root}: not a directory")
        self.rules: list[_Rule] = []
        ignore = os.path.join(self.root, ".dockerignore")
        if os.path.isfile(ignore):
            with open(ignore, encoding="utf-8") as f:
                for raw in f:
                    line = raw.strip()
                    if not line or line.startswith("#"):
                        continue
                    exclude = not line.startswith("!")
                    pat = line.lstrip("!").strip()
                    pat = os.path.normpath(pat.lstrip("/"))
                    if pat == ".":
                        continue
                    self.rules.append(_Rule(_translate(pat), exclude))

    def ignored(self, rel: str) -> bool:
        """True if context-relative ``rel`` is excluded (the last matching rule wins)."""
        out = False
        for rule in self.rules:
            if rule.regex.match(rel):
                out = rule.exclude
        return out

    def resolve_sources(self, patterns: list[str], lineno: int) -> list[str]:
        """Context-relative paths matched by COPY/ADD sources (globs allowed)."""
        found: list[str] = []
        for pat in patterns:
            norm = os.path.normpath(pat.lstrip("/"))
            if norm == ".." or norm.startswith("../"):
                raise BuildError(f"Dockerfile line {lineno}: {pat}: outside the build context")
            if any(ch in norm for ch in "*?["):
                matches = [rel for rel in self._all_paths()
                           if fnmatch.fnmatchcase(rel, norm) and not self.ignored(rel)]
                if not matches:
                    raise BuildError(f"Dockerfile line {lineno}: no source files were "
                                     f"specified by {pat!r}")
                found.extend(sorted(matches))
                continue
            rel = "" if norm == "." else norm
            full = self.abspath(rel, lineno)
            if not os.path.lexists(full) or (rel and self.ignored(rel)):
                raise BuildError(f"Dockerfile line {lineno}: COPY/ADD source {pat!r} not found "
                                 "in the build context")
            found.append(rel)
        return found

    def abspath(self, rel: str, lineno: int) -> str:
        """The real path of ``rel``; refuses a path that leaves the context via a symlink."""
        full = os.path.join(self.root, rel)
        parent = os.path.realpath(os.path.dirname(full))
        if parent != self.root and not parent.startswith(self.root + os.sep):
            raise BuildError(f"Dockerfile line {lineno}: {rel}: outside the build context")
        return full

    def _all_paths(self) -> Iterator[str]:
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            for n in sorted(dirnames + filenames):
                yield n if rel_dir == "." else f"{rel_dir}/{n}"

    def walk(self, rel: str) -> Iterator[str]:
        """``rel`` and (for a dir) everything below it that is not ignored, sorted."""
        full = os.path.join(self.root, rel)
        yield rel
        if os.path.isdir(full) and not os.path.islink(full):
            for name in sorted(os.listdir(full)):
                child = f"{rel}/{name}" if rel else name
                if self.ignored(child):
                    continue
                yield from self.walk(child)

    def digest(self, rels: list[str]) -> str:
        """sha256 over names, types, modes, owners, link targets and contents."""
        h = hashlib.sha256()
        for top in rels:
            for rel in self.walk(top):
                st = os.lstat(os.path.join(self.root, rel))
                h.update(f"{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0".encode())
                if stat.S_ISLNK(st.st_mode):
                    h.update(os.readlink(os.path.join(self.root, rel)).encode())
                elif stat.S_ISREG(st.st_mode):
                    with open(os.path.join(self.root, rel), "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                h.update(b"\0")
        return "sha256:" + h.hexdigest()
