"""`edge-agent origin add|rm|apply|export`: the catalogue file (read, checked, written) in
process, and the commands against real agents."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain import parse_origin
from agent.shell.cli import diff_text
from agent.shell.origin_file import (
    ElementError,
    OriginFileError,
    check,
    compact_statuses,
    from_api,
    header_lines,
    parse,
    sniff,
    to_json,
    to_toml,
)
from tests.test_cli import cli

# --- the file, in process --------------------------------------------------------------------

#: an origin with every key, and values that need escaping in TOML
FULL: dict[str, Any] = {
    "id": "web-1",
    "url": "https://shop.example:8443/health?x=1",
    "interval": "1m30s",
    "timeout": "500ms",
    "rise": 1,
    "fall": 5,
    "down_interval": "2m",
    "expect_status": [200, 204, *range(300, 400)],
    "method": "HEAD",
    "expect_body": 'say "ok" \\ done\ttab\u00e9\u2603\x7f',
    "headers": {
        "Host": "shop.example",
        "X-Quote": 'a "quoted" value, a \\ backslash',
        "X-Unicode": "caf\u00e9 \u2603 \U0001f600",
        "it's.a~token": "ok",
    },
    "tls_verify": False,
}


def spec_dicts(origins: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The origins as the API keeps them: parsed by the config's rules, then to_dict()."""
    return [parse_origin(o).to_dict() for o in origins]


def test_toml_round_trips_every_key_of_an_origin() -> None:
    exported = spec_dicts([FULL, {"id": "db", "url": "tcp://10.0.0.5:5432"}])
    text = to_toml(exported, "a comment\nof two lines")
    assert text.startswith("# a comment\n# of two lines\n\n[[origin]]\n")
    assert 'expect_status = [200, 204, "3xx"]' in text  # a whole class, as people write it
    read = parse(text.encode(), "x.toml", "toml")
    assert tomllib.loads(text)["origin"] == read
    assert check(read) == []
    assert spec_dicts(read) == exported  # the same specs: an apply of it changes nothing
    assert (
        read[1]
        == exported[1]
        == {
            "id": "db",
            "url": "tcp://10.0.0.5:5432",
            "interval": "10s",
            "timeout": "2s",
            "rise": 2,
            "fall": 3,
        }
    )
    # and as JSON (sniffed: no telling extension)
    again = parse(to_json(exported).encode(), "-")
    assert again == exported


header_names = st.text(alphabet="!#$%&'*+.^_`|~-abcXYZ09", min_size=1, max_size=10)
header_values = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\r\n\0"), max_size=20
)


@settings(max_examples=200, deadline=None)
@given(
    headers=st.dictionaries(header_names, header_values, max_size=4),
    body=st.text(st.characters(exclude_categories=("Cs",)), max_size=30),
    codes=st.lists(st.integers(100, 599), min_size=1, max_size=8),
)
def test_toml_round_trips_any_headers_body_and_statuses(
    headers: dict[str, str], body: str, codes: list[int]
) -> None:
    o = {"id": "o", "url": "http://h/", "headers": headers, "expect_body": body}
    o["expect_status"] = codes
    exported = spec_dicts([o])
    read = parse(to_toml(exported).encode(), "f.toml", "toml")
    assert spec_dicts(read) == exported


def test_compact_statuses_only_folds_whole_classes() -> None:
    assert compact_statuses([200]) == [200]
    assert compact_statuses([*range(200, 300), 404]) == ["2xx", 404]
    assert compact_statuses(list(range(201, 300))) == list(range(201, 300))


def test_formats_are_told_apart() -> None:
    assert sniff("[[origin]]\nid = 'a'") == "toml"
    assert sniff('  [ {"id": "a"} ]') == "json"
    assert sniff("[]") == "json"
    assert sniff('{"origin": []}') == "json"
    assert parse(b"[]", "-") == []
    assert parse(b'{"origin": []}', "-") == []
    assert parse(b"origin = []\n", "-") == []
    assert parse(b'\xef\xbb\xbf[{"id": "a"}]', "-") == [{"id": "a"}]  # a BOM is no obstacle
    toml = b'[[origin]]\nid = "a"\nurl = "http://a/"\n'
    assert parse(toml, "-") == parse(toml, "a.txt") == [{"id": "a", "url": "http://a/"}]


@pytest.mark.parametrize(
    ("data", "fmt", "says"),
    [
        (b"", None, "the file is empty"),
        (b"  \n\n", "toml", "the file is empty"),
        (b"\xff\xfe[]", None, "not UTF-8 text (byte 0xff at offset 0)"),
        (b"[[origin]\nid = 1", None, "neither JSON nor TOML (as TOML: "),
        (b'[{"id": "a",}]', None, "neither JSON nor TOML (as JSON: line 1 column"),
        (b'[{"id": "a"}', "json", "not valid JSON (line 1 column"),
        (b'[{"id": "a", "id": "b"}]', None, 'the key "id" appears twice in one object'),
        (b"id = 'a'\n", "toml", 'unknown top-level key "id"'),
        (b"[node]\nname = 'a'\n", "toml", 'unknown top-level key "node"'),
        (b"[origin]\nid = 'a'\n", "toml", "write [[origin]], with two brackets"),
        (b'{"origins": []}', None, 'unknown top-level key "origins"'),
        (b'"a"', "json", '"a" is not a JSON array of origin objects'),
        (b"[[[[" * 100_000, "json", "not valid JSON"),
    ],
)
def test_a_file_that_is_no_catalogue_is_said_so(data: bytes, fmt: str | None, says: str) -> None:
    with pytest.raises(OriginFileError) as e:
        parse(data, "f", fmt)
    assert str(e.value).startswith("f: ") and says in str(e.value), str(e.value)
    assert "\n" not in str(e.value)


def test_every_bad_element_is_named_by_index_id_and_key() -> None:
    text = (
        '[[origin]]\nid = "ok"\nurl = "http://a/"\n\n'
        '[[origin]]\nid = "web-7"\nurl = "http://b/"\ninterval = "0s"\nflavour = 1\n\n'
        '[[origin]]\nurl = "ftp://c/"\n\n'
        '[[origin]]\nid = "ok"\nurl = "http://d/"\n'
    )
    elements = parse(text.encode(), "f.toml", "toml")
    lines = header_lines(text)
    assert lines == [1, 5, 11, 14]
    errors = check(elements, lines)
    assert errors == [
        ElementError(1, "web-7", "interval", '"0s" must be longer than 0', 5),
        ElementError(1, "web-7", "flavour", "unknown key", 5),
        ElementError(2, None, "id", "missing (every origin needs an id)", 11),
        ElementError(
            2, None, "url", '"ftp://c/" is not a valid URL (scheme must be http, https or tcp)', 11
        ),
        ElementError(3, "ok", "id", "also the id of origin[0]", 14),
    ]
    said = 'origin[1] (id "web-7", line 5): interval: "0s" must be longer than 0'
    assert errors[0].text() == said
    assert check([5]) == [ElementError(0, None, None, "5 is not a table")]


def test_the_apis_element_errors_read_the_same() -> None:
    e = from_api(
        {
            "index": 7,
            "id": "web-7",
            "key": "interval",
            "message": "origins[7]: interval: '0s' must be longer than 0",
        }
    )
    assert e == ElementError(7, "web-7", "interval", "'0s' must be longer than 0")
    assert from_api({"message": "origins[3].rise: 0 is out of range"}).key == "rise"
    assert from_api({}).index == -1  # whatever an agent leaves out, nothing fails


def test_the_diff_reads_as_a_diff() -> None:
    answer = {
        "added": ["a", "b"],
        "changed": ["c"],
        "removed": ["d", "e"],
        "unchanged": 7,
        "still_declared": [{"id": "e", "nodes": ["pi-1", "pi-2"]}],
        "dry_run": True,
    }
    assert diff_text(answer).splitlines() == [
        "+ a",
        "+ b",
        "~ c",
        "- d",
        "- e (still declared in the config of pi-1, pi-2: it stays)",
        "2 added, 1 changed, 2 removed, 7 unchanged",
        "(dry run: nothing applied)",
    ]


# --- the commands, without an agent ---------------------------------------------------------


def test_apply_reports_a_bad_file_before_anything_is_sent(tmp_path: Path) -> None:
    # --api points at a port nothing listens on: an attempt to send would say so
    api = ["--api", "127.0.0.1:9"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "a", "url": "http://a/"}, {"id": "b", "url": "x"}]))
    res = cli("origin", "apply", str(bad), *api)
    assert res.returncode == 2, res.stderr
    assert res.stderr.splitlines() == [
        f"edge-agent: {bad}: 1 of 2 origins are invalid; nothing was sent",
        '  origin[1] (id "b"): url: "x" is not a valid URL (scheme must be http, https or tcp)',
    ]
    res = cli("origin", "apply", str(bad), *api, "--json")
    assert res.returncode == 2
    doc = json.loads(res.stdout)
    assert doc["errors"][0]["index"] == 1 and doc["errors"][0]["key"] == "url"
    for args, says in (
        ([str(tmp_path / "absent.toml")], "cannot read it (No such file or directory)"),
        ([str(tmp_path)], "cannot read it (Is a directory)"),
    ):
        res = cli("origin", "apply", *args, *api)
        assert res.returncode == 2 and says in res.stderr and "Traceback" not in res.stderr
    res = cli("origin", "apply", "-", *api, input="")
    assert res.returncode == 2 and "standard input: the file is empty" in res.stderr


def test_add_checks_its_flags_before_anything_is_sent() -> None:
    res = cli("origin", "add", "web 1", "gopher://x", "--interval", "0s", "--api", "127.0.0.1:9")
    assert res.returncode == 2
    assert res.stderr.startswith('edge-agent: ID: "web 1" is not a valid id')
    assert "URL: " in res.stderr and '--interval: "0s" must be longer than 0' in res.stderr
    res = cli("origin", "add", "w", "http://x/", "--header", "nocolon")
    assert res.returncode == 2 and "--header" in res.stderr and "'nocolon'" in res.stderr
