"""An origin catalogue file: what `edge-agent origin apply` reads and `origin export` writes.

The file is TOML with ``[[origin]]`` tables (the same keys as the config's) or JSON (an
array of origin objects, or ``{"origin": [...]}``). Reading checks every element with the
config's own rules (agent.domain.read_origin) before anything is sent, so a bad file is
reported all at once, each problem with the element's index, id and key: a 10,000-origin
import is fixed in one pass, not one request per mistake.

Writing TOML is a small emitter of its own rather than a dependency (tomli-w is not in
Debian, and the Pi image installs Debian's packages): an origin holds only strings,
integers, booleans, lists and one table of strings, which it writes per the TOML spec.
No I/O here: the CLI reads and prints.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.domain import MAX_BATCH, MAX_BATCH_BODY, read_origin, show

#: the most origins one apply may carry, and its largest body: the API's limits
MAX_ORIGINS = MAX_BATCH
MAX_BYTES = MAX_BATCH_BODY
#: element problems listed at most (as the API lists at most 1,000); the count says the rest
MAX_LISTED = 1000

FORMATS = ("toml", "json")


class OriginFileError(Exception):
    """The file cannot be read as a catalogue at all (not UTF-8, neither JSON nor TOML,
    the wrong shape): one sentence naming the file."""


@dataclass(frozen=True)
class OriginProblem:
    """One problem with one element: its index (from 0, as the API counts), its id when it
    has a usable one, the key at fault (None: the element as a whole) and what is wrong."""

    index: int
    id: str | None
    key: str | None
    message: str
    line: int | None = None  # where its [[origin]] header is, in a TOML file

    def text(self) -> str:
        where = [f'id "{self.id}"' if self.id is not None else "no id"]
        if self.line is not None:
            where.append(f"line {self.line}")
        key = f"{self.key}: " if self.key else ""
        return f"origin[{self.index}] ({', '.join(where)}): {key}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        """The shape of an element of the API's "errors" (400 on a bad batch)."""
        return {"index": self.index, "id": self.id, "key": self.key, "message": self.text()}


_PREFIX = re.compile(r"origins?\[(\d+)\](?:\.([^:]+))?:\s*")


def from_api(e: Mapping[str, Any]) -> OriginProblem:
    """An element of the API's "errors", whatever it omits (an older or newer agent)."""
    index = e.get("index")
    oid, key, message = e.get("id"), e.get("key"), str(e.get("message", ""))
    m = _PREFIX.match(message)
    if m:  # "origins[7]: interval: …" says again what index and key say
        message = message[m.end() :]
        key = key or m.group(2)
    if isinstance(key, str) and message.startswith(f"{key}: "):
        message = message[len(key) + 2 :]
    return OriginProblem(
        index if isinstance(index, int) else -1,
        oid if isinstance(oid, str) else None,
        key if isinstance(key, str) else None,
        message,
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose key repeats is refused, as the API refuses it (which of the
    two values was meant cannot be known)."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"the key {show(k)} appears twice in one object")
        out[k] = v
    return out


def _as_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _as_toml(text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(str(e)) from None
    except RecursionError:
        raise ValueError("nested too deeply") from None


def sniff(text: str) -> str:
    """Which format a file without a telling extension most likely is: JSON when it starts
    with "{", or with "[" followed by "{", "]" or "[{" (an array of objects); TOML
    otherwise ("[[origin]]" also starts with "[")."""
    s = re.sub(r"\s+", "", text[:200])
    if s.startswith("{") or re.match(r"\[(\{|\]|\[\{|\[\])", s):
        return "json"
    return "toml"


def parse(data: bytes, name: str, fmt: str | None = None) -> list[Any]:
    """The elements a catalogue file holds (not yet checked one by one).

    ``fmt`` is "toml" or "json" (the file's extension said), else None: then the text is
    tried as JSON and as TOML, and an error gives both reasons, the likelier first.
    """
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet's export may start with a BOM
    except UnicodeDecodeError as e:
        raise OriginFileError(
            f"{name}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save it as UTF-8"
        ) from None
    if not text.strip():
        raise OriginFileError(
            f"{name}: the file is empty; an apply makes the fleet's API-declared origins "
            "exactly the file's, so to remove them all say so: [] in JSON, origin = [] in TOML"
        )
    readers = {"json": _as_json, "toml": _as_toml}
    likely = sniff(text)
    order = [fmt] if fmt else [likely, *(f for f in FORMATS if f != likely)]
    reasons: list[str] = []
    for f in order:
        try:
            doc = readers[f](text)
        except ValueError as e:
            reasons.append(f"{f.upper()}: {e}" if not fmt else str(e))
            continue
        return _elements(doc, f, name)
    if fmt:
        raise OriginFileError(f"{name}: not valid {fmt.upper()} ({reasons[0]})")
    raise OriginFileError(f"{name}: neither JSON nor TOML (as {'; as '.join(reasons)})")


def _elements(doc: Any, fmt: str, name: str) -> list[Any]:
    """The origin list of a parsed file: a JSON array, or a table whose only key is
    "origin" (TOML's [[origin]] tables, or JSON's {"origin": [...]})."""
    if isinstance(doc, list) and fmt == "json":
        return doc
    shape = (
        'a JSON array of origin objects, or {"origin": [...]}'
        if fmt == "json"
        else "[[origin]] tables (with the keys of the config's [[origin]] tables)"
    )
    if not isinstance(doc, dict):
        raise OriginFileError(f"{name}: {show(doc)} is not {shape}")
    other = sorted(k for k in doc if k != "origin")
    if other:
        what = "key" if len(other) == 1 else "keys"
        raise OriginFileError(
            f"{name}: unknown top-level {what} {', '.join(show(k) for k in other)}: "
            f"the file holds only {shape}"
        )
    if "origin" not in doc:
        raise OriginFileError(f"{name}: no origins in it; it should hold {shape}")
    origins = doc["origin"]
    if not isinstance(origins, list):
        hint = " (write [[origin]], with two brackets)" if isinstance(origins, dict) else ""
        raise OriginFileError(f"{name}: origin is {show(origins)}, not a list of origins{hint}")
    return origins


_PROBLEM = re.compile(r"origin\[(\d+)\](?:\.([^:]+))?: (.*)", re.DOTALL)
_HEADER_LINE = re.compile(r"^[ \t]*\[\[[ \t]*origin[ \t]*\]\]", re.MULTILINE)


def header_lines(text: str) -> list[int]:
    """The line of each ``[[origin]]`` header in a TOML text (1-based), to point at an
    element; only used when there is one per element (a header inside a multi-line
    string would otherwise shift them)."""
    lines, line, pos = [], 1, 0
    for m in _HEADER_LINE.finditer(text):
        line += text.count("\n", pos, m.start())
        pos = m.start()
        lines.append(line)
    return lines


def check(elements: list[Any], lines: list[int] | None = None) -> list[OriginProblem]:
    """Every problem of every element, by the config's rules, and ids given twice (the
    later one is wrong, as the API says); [] when the whole catalogue is good."""
    if lines is not None and len(lines) != len(elements):
        lines = None
    errors: list[OriginProblem] = []
    first: dict[str, int] = {}
    for i, t in enumerate(elements):
        oid = t.get("id") if isinstance(t, dict) else None
        oid = oid if isinstance(oid, str) else None
        line = lines[i] if lines else None
        problems: list[str] = []
        read_origin(problems, i, t)
        for p in problems:
            m = _PROBLEM.fullmatch(p)
            key, message = (m.group(2), m.group(3)) if m else (None, p)
            errors.append(OriginProblem(i, oid, key, message, line))
        if oid is not None:
            if oid in first:
                errors.append(
                    OriginProblem(i, oid, "id", f"also the id of origin[{first[oid]}]", line)
                )
            else:
                first[oid] = i
    return errors


def limits_problem(n: int, body_bytes: int) -> str | None:
    """Why the API would refuse the whole request for its size, else None."""
    if n > MAX_ORIGINS:
        return f"{n:,} origins: one apply takes at most {MAX_ORIGINS:,}"
    if body_bytes > MAX_BYTES:
        return (
            f"the origins come to {body_bytes:,} bytes of JSON: one apply takes at most "
            f"{MAX_BYTES:,} (16 MiB)"
        )
    return None


# --- writing ---------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f"}
_ESCAPES["\r"] = "\\r"


class ExportError(ValueError):
    """A value TOML cannot hold (a lone surrogate, a float that is not finite…)."""


def toml_string(s: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped; any other
    character is written as itself (the file is UTF-8)."""
    out = []
    for c in s:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04X}")
        elif 0xD800 <= ord(c) <= 0xDFFF:
            raise ExportError(f"{show(s)} holds a lone surrogate (\\u{ord(c):04x})")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else toml_string(k)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ExportError(f"{v} is not a number TOML can hold")
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        if not v:
            return "{}"
        return "{ " + ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise ExportError(f"{show(v)} is not a value TOML can hold")


def compact_statuses(codes: list[Any]) -> list[Any]:
    """[200, …, 299] -> ["2xx"]: a class given whole is written as the config writes it
    (it reads back as the same 100 codes)."""
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
        return codes
    have = set(codes)
    out: list[Any] = []
    for c in sorted(have):
        cls = c // 100 * 100
        if all(x in have for x in range(cls, cls + 100)):
            if f"{cls // 100}xx" not in out:
                out.append(f"{cls // 100}xx")
        else:
            out.append(c)
    return out


def to_toml(origins: Iterable[Mapping[str, Any]], comment: str = "") -> str:
    """``[[origin]]`` tables that `origin apply` (and tomllib) read back as ``origins``."""
    parts = [f"# {line}\n" for line in comment.splitlines()]
    n = 0
    for o in origins:
        oid = o.get("id")
        lines = ["[[origin]]"]
        for k, v in o.items():
            if k == "expect_status" and isinstance(v, list):
                v = compact_statuses(v)
            try:
                lines.append(f"{toml_key(k)} = {toml_value(v)}")
            except ExportError as e:
                raise ExportError(f"origin {show(oid)}: {k}: {e}") from None
        parts.append(("\n" if parts else "") + "\n".join(lines) + "\n")
        n += 1
    if n == 0:  # an empty set, said so: reading it back means "none", not "no file"
        parts.append("origin = []\n")
    return "".join(parts)


def to_json(origins: list[Any]) -> str:
    """The catalogue as the API takes it: a JSON array (non-ASCII characters as escapes,
    so the file is plain ASCII whatever the terminal's encoding)."""
    return json.dumps(origins, indent=2) + "\n"
