"""`edge-agent origin add|rm|apply|export`: the catalogue file (read, checked, written) in
process, and the commands against real agents."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.domain import parse_origin
from agent.shell.cli import STATUS_ORIGIN_ROWS, diff_text, status_text
from agent.shell.origin_file import (
    OriginFileError,
    OriginProblem,
    check,
    compact_statuses,
    from_api,
    header_lines,
    parse,
    sniff,
    to_json,
    to_toml,
)
from tests.conftest import AgentProcess, ThreadedApp
from tests.test_cli import HEALTH, cli, origin

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
    # an empty set reads back as one, not as a file that forgot its origins
    assert parse(to_toml([], "none").encode(), "-") == []
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
        OriginProblem(1, "web-7", "interval", '"0s" must be longer than 0', 5),
        OriginProblem(1, "web-7", "flavour", "unknown key", 5),
        OriginProblem(2, None, "id", "missing (every origin needs an id)", 11),
        OriginProblem(
            2, None, "url", '"ftp://c/" is not a valid URL (scheme must be http, https or tcp)', 11
        ),
        OriginProblem(3, "ok", "id", "also the id of origin[0]", 14),
    ]
    said = 'origin[1] (id "web-7", line 5): interval: "0s" must be longer than 0'
    assert errors[0].text() == said
    assert check([5]) == [OriginProblem(0, None, None, "5 is not a table")]


def test_the_apis_element_errors_read_the_same() -> None:
    e = from_api(
        {
            "index": 7,
            "id": "web-7",
            "key": "interval",
            "message": "origins[7]: interval: '0s' must be longer than 0",
        }
    )
    assert e == OriginProblem(7, "web-7", "interval", "'0s' must be longer than 0")
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


# --- the commands against a real agent ------------------------------------------------------


def test_add_and_rm_round_trip(agent_process: Callable[..., AgentProcess], tmp_path: Path) -> None:
    a = agent_process('[[origin]]\nid = "from-config"\nurl = "http://127.0.0.1:9/"\n').start()
    a.wait_notify("READY=1")
    cfg = ["--config", str(a.config)]  # the API address and the token both come from it
    res = cli("origin", "add", "web-1", "http://127.0.0.1:9/x", "--interval", "30s", *cfg)
    assert (res.returncode, res.stdout, res.stderr) == (0, "added web-1\n", "")
    res = cli(
        "origin", "add", "web-1", "https://127.0.0.1:9/y", "--rise", "4", "--fall", "1",
        "--expect-status", "200,3xx", "--header", "Host: shop.example", "--no-tls-verify",
        "--method", "head", "--down-interval", "1m", "--expect-body", "ok",
        "--address", "[fd00::5]:8443", "--no-fail-open", *cfg,
    )  # fmt: skip
    assert (res.returncode, res.stdout) == (0, "updated web-1\n"), res.stderr
    _, view = a.get("/v1/origins/web-1")
    assert view["spec"] == {
        "id": "web-1",
        "url": "https://127.0.0.1:9/y",
        "interval": "10s",  # a replacement: what is not given is the default again
        "timeout": "2s",
        "rise": 4,
        "fall": 1,
        "down_interval": "1m",
        "expect_status": [200, *range(300, 400)],
        "method": "HEAD",
        "expect_body": "ok",
        "headers": {"Host": "shop.example"},
        "tls_verify": False,
        "address": "[fd00::5]:8443",
        "fail_open": False,
    }
    res = cli("origin", "add", "web-3", "http://127.0.0.1:9/", "--address", "nowhere", *cfg)
    assert res.returncode == 2 and '--address: "nowhere" is not host:port' in res.stderr
    res = cli("origin", "add", "web-2", "tcp://127.0.0.1:9", "--json", *cfg)
    assert res.returncode == 0 and json.loads(res.stdout)["spec"]["url"] == "tcp://127.0.0.1:9"

    res = cli("origin", "rm", "web-1", *cfg)
    assert (res.returncode, res.stdout, res.stderr) == (0, "removed web-1\n", "")
    assert a.get("/v1/origins/web-1")[0] == 404
    res = cli("origin", "rm", "web-1", *cfg)
    assert res.returncode == 1
    assert res.stderr == "edge-agent: no origin 'web-1' in the fleet: nothing removed\n"
    res = cli("origin", "rm", "from-config", *cfg)
    assert res.returncode == 1
    assert "from-config stays in the fleet" in res.stderr
    assert "declared in the config of test-node" in res.stderr, res.stderr
    assert a.get("/v1/origins/from-config")[0] == 200
    res = cli("origin", "rm", "web-2", "--json", *cfg)
    assert res.returncode == 0 and json.loads(res.stdout)["removed"] is True


def test_writes_without_the_fleet_token_say_so(
    agent_process: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    a = agent_process("").start()
    a.wait_notify("READY=1")
    catalogue = tmp_path / "c.json"
    catalogue.write_text(json.dumps([{"id": "a", "url": "http://127.0.0.1:9/"}]))
    no_token = tmp_path / "no-token.toml"
    no_token.write_text(f'[api]\nlisten = "127.0.0.1:{a.port}"\n')
    unreadable = tmp_path / "unreadable.toml"
    unreadable.write_text(
        f'[api]\nlisten = "127.0.0.1:{a.port}"\ntoken_file = "{tmp_path / "absent"}"\n'
    )
    for command in (
        ["origin", "add", "a", "http://127.0.0.1:9/"],
        ["origin", "rm", "a"],
        ["origin", "apply", str(catalogue)],
    ):
        res = cli(*command, "--config", str(no_token))
        assert res.returncode == 2, (command, res.stderr)
        assert res.stderr.startswith("edge-agent: changing the fleet's origins needs the fleet")
        assert f"set [api] token_file in {no_token}" in res.stderr
        assert len(res.stderr.splitlines()) == 1
        res = cli(*command, "--config", str(unreadable))
        assert res.returncode == 2, (command, res.stderr)
        assert res.stderr == (
            f"edge-agent: cannot read the fleet write token from {tmp_path / 'absent'} ([api] "
            "token_file: No such file or directory); run as a user who can (e.g. with sudo), "
            "or pass --token-file FILE\n"
        )
        # a wrong token: the agent refuses it, and the CLI passes its reason on
        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-token\n")
        res = cli(*command, "--api", a.url, "--token-file", str(wrong))
        assert res.returncode == 1 and "401 missing or wrong bearer token" in res.stderr
    _, origins = a.get("/v1/origins")
    assert origins == []
    # --token-file is enough without any config
    res = cli("origin", "add", "a", "http://127.0.0.1:9/", "--api", a.url, "--token-file",
              str(a.token_file))  # fmt: skip
    assert res.returncode == 0, res.stderr


def catalogue(a: AgentProcess) -> list[dict[str, Any]]:
    status, doc = a.get("/v1/catalogue")
    assert status == 200, doc
    return list(doc)


def test_apply_prints_the_exact_diff_and_export_round_trips(
    agent_process: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    a = agent_process('[[origin]]\nid = "cfg-1"\nurl = "http://127.0.0.1:9/"\n').start()
    a.wait_notify("READY=1")
    cfg = ["--config", str(a.config)]
    # the API declares an origin that the node's config declares too
    assert cli("origin", "add", "cfg-1", "http://127.0.0.1:9/", *cfg).returncode == 0
    toml = tmp_path / "shop.toml"
    toml.write_text(
        "".join(
            f'[[origin]]\nid = "{n}"\nurl = "http://127.0.0.1:9/{n}"\ninterval = "30s"\n\n'
            for n in ("a", "b", "c")
        )
    )
    first = [
        "+ a",
        "+ b",
        "+ c",
        "- cfg-1 (still declared in the config of test-node: it stays)",
        "3 added, 0 changed, 1 removed, 0 unchanged",
    ]
    before = catalogue(a)
    res = cli("origin", "apply", str(toml), "--dry-run", *cfg)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [*first, "(dry run: nothing applied)"]
    assert catalogue(a) == before  # nothing applied
    res = cli("origin", "apply", str(toml), *cfg)
    assert (res.returncode, res.stdout.splitlines(), res.stderr) == (0, first, "")
    assert [o["id"] for o in catalogue(a)] == ["a", "b", "c"]
    _, origins = a.get("/v1/origins")
    assert [o["id"] for o in origins] == ["a", "b", "c", "cfg-1"]  # cfg-1 stays

    # JSON, from standard input: a unchanged, b changed, c removed, d added
    doc = [
        {"id": "a", "url": "http://127.0.0.1:9/a", "interval": "30s"},
        {"id": "b", "url": "http://127.0.0.1:9/b", "interval": "1m"},
        {"id": "d", "url": "tcp://127.0.0.1:9"},
    ]
    res = cli("origin", "apply", "-", *cfg, input=json.dumps({"origin": doc}))
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "+ d",
        "~ b",
        "- c",
        "1 added, 1 changed, 1 removed, 1 unchanged",
    ]
    res = cli("origin", "apply", "-", "--json", *cfg, input=json.dumps(doc))
    answer = json.loads(res.stdout)
    assert (answer["added"], answer["changed"], answer["removed"]) == ([], [], [])
    assert answer["unchanged"] == 3 and answer["dry_run"] is False

    # give the catalogue every key, then export | apply changes nothing, in both formats
    full = {**FULL, "url": "https://127.0.0.1:9/health?x=1"}
    assert a.call("PUT", "/v1/origins/web-1", full)[0] == 201
    before = catalogue(a)
    for fmt in ("toml", "json"):
        exported = cli("origin", "export", "--format", fmt, *cfg)
        assert exported.returncode == 0, exported.stderr
        res = cli("origin", "apply", "-", *cfg, input=exported.stdout)
        assert res.returncode == 0, res.stderr
        assert res.stdout == "0 added, 0 changed, 0 removed, 4 unchanged\n", fmt
        assert catalogue(a) == before
    exported = cli("origin", "export", *cfg).stdout
    assert spec_dicts(tomllib.loads(exported)["origin"]) == before
    assert json.loads(cli("origin", "export", "--json", *cfg).stdout) == before


def test_a_bad_file_applies_nothing(
    agent_process: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    a = agent_process("").start()
    a.wait_notify("READY=1")
    cfg = ["--config", str(a.config)]
    good = [{"id": f"o{i}", "url": f"http://127.0.0.1:9/{i}"} for i in range(3)]
    assert cli("origin", "apply", "-", *cfg, input=json.dumps(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[origin]]\nid = "o0"\nurl = "http://127.0.0.1:9/0"\n\n'
        '[[origin]]\nid = "web-7"\nurl = "http://127.0.0.1:9/7"\nrise = 0\n'
    )
    res = cli("origin", "apply", str(bad), *cfg)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        f"edge-agent: {bad}: 1 of 2 origins are invalid; nothing was sent",
        '  origin[1] (id "web-7", line 5): rise: 0 is out of range (1..100)',
    ]
    assert [o["id"] for o in catalogue(a)] == ["o0", "o1", "o2"]


def test_the_agents_own_refusal_is_said_element_by_element(tmp_path: Path) -> None:
    """The agent is the authority: a batch it refuses (400 with "errors") is reported as a
    bad file, one line per element, even when the local check passed it."""
    from aiohttp import web

    seen: list[Any] = []

    async def refuse(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), await request.json()))
        return web.json_response(
            {
                "error": "1 of 1 origins are invalid; nothing was applied",
                "status": 400,
                "errors": [
                    {
                        "index": 0,
                        "id": "a",
                        "key": "url",
                        "message": "origins[0]: url: a reason of the agent's own",
                    }
                ],
            },
            status=400,
        )

    app = web.Application()
    app.router.add_put("/v1/origins", refuse)
    srv = ThreadedApp(app)
    try:
        token = tmp_path / "token"
        token.write_text("t0ken\n")
        api = ["--api", f"127.0.0.1:{srv.port}", "--token-file", str(token)]
        doc = [{"id": "a", "url": "http://127.0.0.1:9/"}]
        res = cli("origin", "apply", "-", *api, input=json.dumps(doc))
        assert res.returncode == 2
        assert res.stderr.splitlines() == [
            "edge-agent: 1 of 1 origins are invalid; nothing was applied",
            '  origin[0] (id "a"): url: a reason of the agent\'s own',
        ]
        assert seen == [("Bearer t0ken", doc)]
        res = cli("origin", "apply", "-", *api, "--json", input=json.dumps(doc))
        assert res.returncode == 2 and json.loads(res.stdout)["errors"][0]["key"] == "url"
        res = cli("origin", "export", *api[:2])
        assert res.returncode == 1 and "too old for `origin export`" in res.stderr
    finally:
        srv.close()


def test_status_asks_for_verdicts_only_and_the_shown_origins_in_full() -> None:
    """`status` stays small with 100,000 origins: a compact listing (followed page by page
    when the agent pages it), then the full view of only the origins it shows."""
    from aiohttp import web

    full = {
        f"o{i:02}": origin(f"o{i:02}", "down" if i % 2 else "up", ["pi-a"], True) for i in range(40)
    }
    asked: list[str] = []

    async def health(request: web.Request) -> web.Response:
        asked.append(request.path_qs)
        return web.json_response(HEALTH)

    async def listing(request: web.Request) -> web.Response:
        asked.append(request.path_qs)
        after = request.query.get("after", "")
        ids = [i for i in sorted(full) if i > after][:25]
        resp = web.json_response([{"id": i, "verdict": full[i]["verdict"]} for i in ids])
        if ids[-1] != max(full):
            resp.headers["Link"] = (
                f'</v1/origins?after={ids[-1]}&limit=25&fields=id,verdict>; rel="next"'
            )
        return resp

    async def one(request: web.Request) -> web.Response:
        asked.append(request.path_qs)
        return web.json_response(full[request.match_info["id"]])

    app = web.Application()
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/origins", listing)
    app.router.add_get("/v1/origins/{id}", one)
    srv = ThreadedApp(app)
    try:
        res = cli("status", "--api", f"127.0.0.1:{srv.port}")
    finally:
        srv.close()
    assert res.returncode == 0, res.stderr
    shown = [i for i in sorted(full) if full[i]["verdict"] != "up"][:STATUS_ORIGIN_ROWS]
    assert asked == [
        "/v1/health",
        "/v1/origins?fields=id,verdict&limit=5000",
        "/v1/origins?after=o24&limit=25&fields=id,verdict",
        *(f"/v1/origins/{i}" for i in shown),
    ]
    expected = [full[i] if i in shown else {"id": i, "verdict": full[i]["verdict"]} for i in full]
    assert res.stdout == status_text(HEALTH, expected) + "\n"
    assert "origins not up (20 of 40):" in res.stdout and "… and 10 more" in res.stdout


def test_a_token_file_that_holds_no_token_is_said_so(tmp_path: Path) -> None:
    empty, binary = tmp_path / "empty", tmp_path / "binary"
    empty.write_text("\n")
    binary.write_bytes(b"\xff\xfe")
    for path, says in (
        (empty, f"the fleet write token file {empty} (--token-file) is empty"),
        (binary, f"the fleet write token file {binary} (--token-file) is not text"),
        (tmp_path, f"cannot read the fleet write token from {tmp_path} (--token-file: Is a"),
    ):
        res = cli("origin", "rm", "a", "--api", "127.0.0.1:9", "--token-file", str(path))
        assert res.returncode == 2 and res.stderr.startswith(f"edge-agent: {says}"), res.stderr
