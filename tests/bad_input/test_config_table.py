"""The config table: each case is a file `edge-agent check-config` reads, with the exit code
and the message (naming the key) it must give. Cases that must be ACCEPTED are in the table
too, so a check that refuses everything fails as surely as one that refuses nothing.

Most cases run in-process through cli.main (fast); a few run as real subprocesses, for
`check-config` and for `run`, to see the exit code and that no traceback reaches stderr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.shell import cli
from tests.bad_input.support import cli as run_cli

GOOD_KEY = "ImSX+MyxRCLojOJaJPksqL+fMzBzvVYrc5x1mwvchVo="
SHORT_KEY = "eHh4eHh4eHh4eA=="  # 10 bytes: AES needs 16, 24 or 32
LONG_ID = "a" * 10240


@dataclass(frozen=True)
class Case:
    id: str
    toml: str  # "{tmp}" is the case's directory; [node] data_dir is added unless given
    rc: int
    says: tuple[str, ...] = ()  # fragments the output must hold (stderr, or stdout on 0)
    files: dict[str, bytes] = field(default_factory=dict)  # written into {tmp} first
    raw: bytes | None = None  # the file's exact bytes instead of toml


def ok(id: str, toml: str, **kw: object) -> Case:
    return Case(id, toml, 0, ("ok",), **kw)  # type: ignore[arg-type]


def bad(id: str, toml: str, *says: str, **kw: object) -> Case:
    return Case(id, toml, 2, says, **kw)  # type: ignore[arg-type]


CASES = [
    # --- issue 16 item 1: a number where an address belongs
    bad("api-listen-int", "[api]\nlisten = 8080\n", "api.listen: 8080 is not host:port"),
    bad("cluster-bind-int", "[cluster]\nbind = 7946\n", "cluster.bind: 7946 is not host:port"),
    bad("advertise-int", "[cluster]\nadvertise = 1\n", "cluster.advertise: 1 is not host:port"),
    bad("listen-bool", "[api]\nlisten = true\n", "api.listen: true is not host:port"),
    bad("listen-no-port", '[api]\nlisten = "127.0.0.1"\n', "api.listen", "missing :port"),
    bad("listen-bad-port", '[api]\nlisten = "127.0.0.1:99999"\n', "api.listen", "bad port"),
    bad("listen-space-host", '[api]\nlisten = "exa mple:8080"\n', "api.listen", "host"),
    # --- IPv6
    ok("bind-ipv6-brackets", '[cluster]\nbind = "[::1]:7946"\n'),
    ok("listen-ipv6-brackets", '[api]\nlisten = "[::1]:8080"\n'),
    ok("join-ipv6-default-port", '[cluster]\njoin = ["[fe80::1%eth0]", "[::1]:7947"]\n'),
    bad("bind-ipv6-no-brackets", '[cluster]\nbind = "::1:7946"\n', "cluster.bind", "brackets"),
    bad("bind-ipv6-unclosed", '[cluster]\nbind = "[::1:7946"\n', "cluster.bind", "unclosed"),
    bad("bind-ipv6-junk", '[cluster]\nbind = "[::1]x7946"\n', "cluster.bind", "junk"),
    bad("join-ipv6-bad", '[cluster]\njoin = ["::1"]\n', "cluster.join[0]", "brackets"),
    bad("join-not-string", "[cluster]\njoin = [7946]\n", "cluster.join[0]: 7946 is not a string"),
    # --- item 4: the files the config names
    bad(
        "keyring-missing",
        '[cluster]\nkeyring_file = "{tmp}/nope.key"\n',
        "cluster.keyring_file",
        "nope.key",
        "cannot read",
    ),
    bad(
        "keyring-not-base64",
        '[cluster]\nkeyring_file = "{tmp}/k"\n',
        "cluster.keyring_file",
        files={"k": b"not base64 at all!\n"},
    ),
    bad(
        "keyring-short-key",
        '[cluster]\nkeyring_file = "{tmp}/k"\n',
        "cluster.keyring_file",
        files={"k": SHORT_KEY.encode() + b"\n"},
    ),
    bad(
        "keyring-empty",
        '[cluster]\nkeyring_file = "{tmp}/k"\n',
        "cluster.keyring_file",
        "no keys",
        files={"k": b"\n"},
    ),
    ok(
        "keyring-good",
        '[cluster]\nkeyring_file = "{tmp}/k"\n',
        files={"k": GOOD_KEY.encode() + b"\n"},
    ),
    ok(
        "keyring-serf-json",
        '[cluster]\nkeyring_file = "{tmp}/k"\n',
        files={"k": b'["' + GOOD_KEY.encode() + b'"]'},
    ),
    bad(
        "data-dir-regular-file",
        '[node]\ndata_dir = "{tmp}/f"\n',
        "node.data_dir",
        "is not a directory",
        files={"f": b"x"},
    ),
    bad(
        "data-dir-under-a-file",
        '[node]\ndata_dir = "{tmp}/f/data"\n',
        "node.data_dir",
        "cannot be created",
        files={"f": b"x"},
    ),
    ok("data-dir-creatable", '[node]\ndata_dir = "{tmp}/new/deeper"\n'),
    bad(
        "token-file-missing",
        '[api]\ntoken_file = "{tmp}/nope"\n',
        "api.token_file",
        "cannot read",
    ),
    bad(
        "token-file-empty",
        '[api]\ntoken_file = "{tmp}/t"\n',
        "api.token_file",
        "is empty",
        files={"t": b" \n"},
    ),
    ok("token-file-good", '[api]\ntoken_file = "{tmp}/t"\n', files={"t": b"s3cret\n"}),
    bad("token-file-int", "[api]\ntoken_file = 5\n", "api.token_file: 5 is not a string"),
    # --- NUL bytes
    bad("nul-in-token-file", '[api]\ntoken_file = "{tmp}/t\\u0000x"\n', "api.token_file", "NUL"),
    bad("nul-in-data-dir", '[node]\ndata_dir = "{tmp}/d\\u0000"\n', "node.data_dir", "NUL"),
    bad(
        "nul-in-keyring-file",
        '[cluster]\nkeyring_file = "{tmp}/k\\u0000"\n',
        "cluster.keyring_file",
        "NUL",
    ),
    bad("nul-in-node-name", '[node]\ndata_dir = "{tmp}/d"\nname = "a\\u0000b"\n', "node.name"),
    bad(
        "nul-in-origin-url",
        '[[origin]]\nid = "x"\nurl = "http://h/\\u0000"\n',
        "origin[0].url",
        "control character",
    ),
    bad(
        "nul-in-listen",
        '[api]\nlisten = "127.0.0.1\\u0000:8080"\n',
        "api.listen",
        "host",
    ),
    bad("raw-nul-byte-in-file", "", "not valid TOML", raw=b'[node]\nname = "a\x00"\n'),
    # --- item 6: error text
    bad(
        "url-with-space",
        '[[origin]]\nid = "x"\nurl = "http://exa mple.com/"\n',
        "origin[0].url",
        "white space",
    ),
    bad(
        "interval-zero",
        '[[origin]]\nid = "x"\nurl = "http://h/"\ninterval = "0s"\n',
        'origin[0].interval: "0s" must be longer than 0',
    ),
    bad(
        "interval-number",
        '[[origin]]\nid = "x"\nurl = "http://h/"\ninterval = 10\n',
        "origin[0].interval",
        '"10s"',
    ),
    bad(
        "interval-negative",
        '[[origin]]\nid = "x"\nurl = "http://h/"\ninterval = "-1s"\n',
        'origin[0].interval: "-1s" is not a duration',
    ),
    bad(
        "interval-huge",
        '[[origin]]\nid = "x"\nurl = "http://h/"\ninterval = "99999999999999999999999h"\n',
        "origin[0].interval",
        "longer than",
    ),
    bad(
        "interval-sub-millisecond",
        '[[origin]]\nid = "x"\nurl = "http://h/"\ninterval = "0.0001ms"\n',
        "origin[0].interval",
        "shorter than",
    ),
    ok("interval-odd-but-fine", '[[origin]]\nid = "x"\nurl = "http://h/"\ninterval = "1m30s"\n'),
    ok(
        "interval-two-weeks-and-a-half-second",
        '[[origin]]\nid = "x"\nurl = "http://h/"\ninterval = "1234567.5s"\ntimeout = "1s"\n',
    ),
    bad(
        "reap-after-huge",
        '[cluster]\nreap_after = "99999999999d"\n',
        "cluster.reap_after",
        "longer than",
    ),
    bad("commit-interval-zero", '[store]\ncommit_interval = "0s"\n', "store.commit_interval"),
    bad(
        "gossip-interval-zero",
        '[gossip]\ngossip_interval = "0s"\n',
        "gossip.gossip_interval",
        "longer than 0",
    ),
    bad(
        "gossip-probe-interval-negative",
        '[gossip]\nprobe_interval = "-1s"\n',
        'gossip.probe_interval: "-1s" is not a duration',
    ),
    bad(
        "headers-number",
        '[[origin]]\nid = "x"\nurl = "http://h/"\nheaders = {X = 1}\n',
        "origin[0].headers",
        "X = 1",
    ),
    bad(
        "headers-newline-in-value",
        '[[origin]]\nid = "x"\nurl = "http://h/"\nheaders = {X = "a\\r\\nInjected: 1"}\n',
        "origin[0].headers",
        "X",
        "line break",
    ),
    bad(
        "headers-bad-name",
        '[[origin]]\nid = "x"\nurl = "http://h/"\nheaders = {"Bad Name" = "v"}\n',
        "origin[0].headers",
        "Bad Name",
    ),
    bad(
        "webhook-url-number",
        "[[webhook]]\nurl = 5\n",
        "webhook[0].url: 5 is not a string",
    ),
    bad(
        "webhook-headers-number",
        '[[webhook]]\nurl = "http://h/"\nheaders = {Y = 2}\n',
        "webhook[0].headers",
        "Y = 2",
    ),
    ok("webhook-good", '[[webhook]]\nurl = "https://h.example/x"\nheaders = {Auth = "t"}\n'),
    # --- unicode and 10 KB ids
    bad(
        "unicode-origin-id",
        '[[origin]]\nid = "café"\nurl = "http://h/"\n',
        'origin[0].id: "café" is not a valid id',
    ),
    bad("unicode-node-name", '[node]\ndata_dir = "{tmp}/d"\nname = "nœud"\n', "node.name"),
    ok("unicode-host-name", '[[origin]]\nid = "x"\nurl = "http://bücher.example/"\n'),
    bad(
        "10kb-origin-id",
        f'[[origin]]\nid = "{LONG_ID}"\nurl = "http://h/"\n',
        "origin[0].id",
        "(10240 characters)",
    ),
    bad("10kb-node-name", f'[node]\ndata_dir = "{{tmp}}/d"\nname = "{LONG_ID}"\n', "node.name"),
    # --- the file itself
    bad(
        "duplicate-toml-key",
        '[api]\nlisten = "127.0.0.1:1"\nlisten = "127.0.0.1:2"\n',
        "not valid TOML",
    ),
    bad("duplicate-table", '[api]\n[api]\nlisten = "127.0.0.1:1"\n', "not valid TOML"),
    bad(
        "duplicate-origin-id",
        '[[origin]]\nid = "x"\nurl = "http://h/"\n[[origin]]\nid = "x"\nurl = "http://g/"\n',
        'origin[1].id: duplicate id "x"',
    ),
    bad("not-utf8", "", "not UTF-8", raw=b'[node]\nname = "\xff\xfe"\n'),
    bad("unknown-key", "[api]\nlisen = 1\n", "api.lisen: unknown key"),
    bad("unknown-table", "[apii]\n", "apii: unknown key"),
    ok("empty-file", ""),
]


def write_case(tmp: Path, case: Case) -> Path:
    for name, data in case.files.items():
        (tmp / name).write_bytes(data)
    text = case.toml.replace("{tmp}", str(tmp))
    if "[node]" not in text:
        text = f'[node]\ndata_dir = "{tmp}/data"\n' + text
    path = tmp / "agent.toml"
    path.write_bytes(case.raw if case.raw is not None else text.encode())
    return path


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_check_config(case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_case(tmp_path, case)
    rc = cli.main(["check-config", str(path)])
    out, err = capsys.readouterr()
    said = err if case.rc else out
    assert rc == case.rc, f"exit {rc}, not {case.rc}:\n{out}{err}"
    for fragment in case.says:
        assert fragment in said, f"{fragment!r} not in:\n{said}"
    assert str(path) in said
    assert "Traceback" not in out + err
    assert len(err) < 2000, "an error message stays short, whatever the input's size"


def test_webhook_url_number_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """[[webhook]] url = 5 is one problem, not a second, bogus "is not an http(s) URL"."""
    path = write_case(tmp_path, bad("x", "[[webhook]]\nurl = 5\n"))
    assert cli.main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err.strip().count("\n") == 0


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.id in ("api-listen-int", "interval-huge", "nul-in-data-dir")],
    ids=lambda c: c.id,
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_as_a_real_process(case: Case, command: str, tmp_path: Path) -> None:
    """The real command: exit 2 (systemd does not restart it forever), no traceback."""
    path = write_case(tmp_path, case)
    args = ["check-config", str(path)] if command == "check-config" else ["run", "--config"]
    rc, out, err = run_cli(*args, *([str(path)] if command == "run" else []), cwd=tmp_path)
    assert rc == 2, f"exit {rc}:\n{out}{err}"
    assert "Traceback" not in err
    assert case.says[0] in err


def test_missing_file(tmp_path: Path) -> None:
    rc, _, err = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert rc == 2 and "nope.toml: cannot read: No such file or directory" in err, err
    assert "Traceback" not in err
