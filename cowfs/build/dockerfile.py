"""Dockerfile parsing: lines → instructions, with docker's quoting and variables.

Owns: the syntax (continuations, comments, the ``escape`` directive, JSON exec
form, ``--flag=value`` options, ``${VAR}``/``${VAR:-x}``/``${VAR:+x}`` expansion).
Executes nothing; errors name the line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import BuildError

SUPPORTED = frozenset({
    "FROM", "COPY", "ADD", "RUN", "ENV", "ARG", "WORKDIR", "USER", "LABEL", "EXPOSE",
    "CMD", "ENTRYPOINT", "VOLUME", "SHELL", "MAINTAINER", "STOPSIGNAL",
})
_EXPANDS = frozenset({"FROM", "COPY", "ADD", "ENV", "ARG", "WORKDIR", "USER", "LABEL",
                      "EXPOSE", "VOLUME", "STOPSIGNAL"})
_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:[-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass(frozen=True)
class Instruction:
    """One instruction: ``cmd`` upper-case, ``flags`` (``--from=x``), and its arguments.

    ``args`` is the exec-form list when ``json`` is true, else the raw text (shell form).
    ``original`` is the instruction as written (continuations joined), used in cache keys.
    """

    cmd: str
    args: list[str] | str
    flags: dict[str, str]
    lineno: int
    original: str
    json: bool = False

    @property
    def text(self) -> str:
        return self.args if isinstance(self.args, str) else json.dumps(self.args)


@dataclass
class Stage:
    """A build stage: ``FROM base [AS name]`` and its instructions."""

    base: str
    name: str | None
    index: int
    lineno: int
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    """Global ARGs (before the first FROM) and the stages, in order."""

    global_args: list[Instruction]
    stages: list[Stage]


def expand(text: str, env: Mapping[str, str], lineno: int) -> str:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:+alt}``; ``\\$`` is literal."""
    out: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] == "$":
            out.append("$")
            i += 2
            continue
        if c == "$":
            m = _VAR.match(text, i)
            if m:
                name = m.group(1) or m.group(4)
                op, word = m.group(2), m.group(3)
                val = env.get(name)
                if op == ":-":
                    out.append(val if val else expand(word or "", env, lineno))
                elif op == ":+":
                    out.append(expand(word or "", env, lineno) if val else "")
                else:
                    out.append(val or "")
                i = m.end()
                continue
            if text.startswith("${", i):
                raise BuildError(f"Dockerfile line {lineno}: bad variable substitution in "
                                 f"{text!r}")
        out.append(c)
        i += 1
    return "".join(out)


def split_words(text: str, lineno: int) -> list[str]:
    """Split shell-form arguments on whitespace, honouring quotes and backslashes."""
    words: list[str] = []
    cur: list[str] = []
    quote: str | None = None
    have = False
    i = 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"' and i + 1 < len(text):
                i += 1
                cur.append(text[i])
            else:
                cur.append(c)
        elif c in "\"'":
            quote = c
            have = True
        elif c == "\\" and i + 1 < len(text):
            i += 1
            cur.append(text[i])
            have = True
        elif c.isspace():
            if cur or have:
                words.append("".join(cur))
                cur, have = [], False
        else:
            cur.append(c)
            have = True
        i += 1
    if quote:
        raise BuildError(f"Dockerfile line {lineno}: unterminated quote")
    if cur or have:
        words.append("".join(cur))
    return words


def _logical_lines(text: str) -> list[tuple[int, str]]:
    escape = "\\"
    lines = text.splitlines()
    # parser directives: only at the very top, before any instruction or comment line
    for raw in lines:
        m = _DIRECTIVE.match(raw.strip())
        if not m:
            break
        if m.group(1).lower() == "escape":
            if m.group(2) not in ("\\", "`"):
                raise BuildError(f"Dockerfile: invalid escape directive {m.group(2)!r}")
            escape = m.group(2)
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comments inside a continuation are dropped
        if not buf:
            start = n
        if raw.rstrip().endswith(escape):
            buf.append(raw.rstrip()[:-1])
            continue
        buf.append(raw)
        out.append((start, " ".join(s.strip() for s in buf if s.strip())))
        buf = []
    if buf:
        out.append((start, " ".join(s.strip() for s in buf if s.strip())))
    return out


def _parse_instruction(lineno: int, line: str) -> Instruction:
    word, _, rest = line.partition(" ")
    cmd = word.upper()
    if cmd not in SUPPORTED:
        raise BuildError(f"Dockerfile line {lineno}: unknown instruction {word!r}")
    rest = rest.strip()
    flags: dict[str, str] = {}
    if cmd in ("COPY", "ADD", "FROM", "RUN"):
        while rest.startswith("--"):
            tok, _, rest = rest.partition(" ")
            key, eq, value = tok[2:].partition("=")
            if not key:
                raise BuildError(f"Dockerfile line {lineno}: bad flag {tok!r}")
            if cmd == "RUN" and key not in ("network",):
                raise BuildError(f"Dockerfile line {lineno}: RUN --{key} is not supported")
            flags[key] = value if eq else "true"
            rest = rest.strip()
    if cmd in ("RUN", "CMD", "ENTRYPOINT", "COPY", "ADD", "VOLUME", "SHELL") and \
            rest.startswith("["):
        try:
            parsed = json.loads(rest)
        except ValueError:
            parsed = None
        if isinstance(parsed, list) and all(isinstance(x, str) for x in parsed):
            return Instruction(cmd, parsed, flags, lineno, line, json=True)
        if cmd == "SHELL":
            raise BuildError(f"Dockerfile line {lineno}: SHELL needs a JSON array")
    if not rest and cmd not in ("CMD", "ENTRYPOINT"):
        raise BuildError(f"Dockerfile line {lineno}: {cmd} needs arguments")
    return Instruction(cmd, rest, flags, lineno, line)


def parse(text: str) -> Dockerfile:
    """Parse a Dockerfile. Raises BuildError naming the line of the first problem."""
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for lineno, line in _logical_lines(text):
        ins = _parse_instruction(lineno, line)
        if ins.cmd == "FROM":
            words = split_words(str(ins.args), lineno)
            name = None
            if len(words) == 3 and words[1].lower() == "as":
                name = words[2].lower()
            elif len(words) != 1:
                raise BuildError(f"Dockerfile line {lineno}: FROM wants 'IMAGE [AS NAME]'")
            stages.append(Stage(words[0], name, len(stages), lineno))
            if ins.flags:
                raise BuildError(f"Dockerfile line {lineno}: FROM --{next(iter(ins.flags))} "
                                 "is not supported")
        elif not stages:
            if ins.cmd != "ARG":
                raise BuildError(f"Dockerfile line {lineno}: {ins.cmd} before the first FROM")
            global_args.append(ins)
        else:
            stages[-1].instructions.append(ins)
    if not stages:
        raise BuildError("Dockerfile: no FROM instruction")
    return Dockerfile(global_args, stages)


def parse_key_values(text: str, lineno: int, cmd: str) -> list[tuple[str, str]]:
    """ENV/LABEL/ARG pairs: ``K=V K2="v 2"`` or the legacy ``K V`` form (ENV/LABEL)."""
    words = split_words(text, lineno)
    if not words:
        raise BuildError(f"Dockerfile line {lineno}: {cmd} needs arguments")
    if "=" not in words[0]:
        if cmd == "ARG":
            return [(words[0], "")] if len(words) == 1 else _bad(lineno, cmd)
        if len(words) < 2:
            raise BuildError(f"Dockerfile line {lineno}: {cmd} {words[0]} needs a value")
        _key, _, value = text.strip().partition(" ")
        return [(words[0], " ".join(split_words(value.strip(), lineno)))]
    pairs = []
    for w in words:
        k, eq, v = w.partition("=")
        if not eq or not k:
            raise BuildError(f"Dockerfile line {lineno}: {cmd} wants KEY=VALUE, got {w!r}")
        pairs.append((k, v))
    return pairs


def _bad(lineno: int, cmd: str) -> list[tuple[str, str]]:
    raise BuildError(f"Dockerfile line {lineno}: {cmd} wants NAME[=DEFAULT]")
