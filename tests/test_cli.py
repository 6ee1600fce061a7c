"""The client commands against a real running agent, and the ones that need none."""

from __future__ import annotations

import base64
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import agent.shell.config
from agent.shell.cli import (
    STATUS_ORIGIN_ROWS,
    _api_base,
    build_parser,
    members_table,
    origins_table,
    status_text,
)
from agent.shell.config import CONFIG_ENV
from tests.conftest import AgentProcess, OriginServer, require, wait_for


def cli(
    *args: str, env: dict[str, str] | None = None, **run: Any
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    return subprocess.run(
        [sys.executable, "-m", "agent.shell.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **(env or {})},
        **run,
    )


def test_version_and_usage() -> None:
    res = cli("--version")
    assert res.returncode == 0 and res.stdout.startswith("edge-agent ")
    assert cli().returncode == 2
    assert cli("no-such-command").returncode == 2


def test_keygen_matches_serf_format() -> None:
    ours = cli("keygen").stdout.strip()
    assert len(base64.b64decode(ours, validate=True)) == 32
    serf = shutil.which("serf")
    require(serf is not None, "Debian package serf")
    assert serf is not None
    theirs = subprocess.run([serf, "keygen"], capture_output=True, text=True).stdout.strip()
    assert len(ours) == len(theirs)  # same encoding of the same key size
    assert cli("keygen").stdout.strip() != ours


def test_status_origins_members_against_a_live_agent(
    agent_process: Callable[..., AgentProcess], origin_server: OriginServer
) -> None:
    origin_server.down.add("bad")
    cfg = "".join(
        f'[[origin]]\nid = "{n}"\nurl = "{origin_server.url(n)}"\ninterval = "200ms"\n'
        f'timeout = "200ms"\nrise = 1\nfall = 1\n'
        for n in ("good", "bad")
    )
    a = agent_process(cfg, name="cli-node").start()
    a.wait_notify("READY=1")
    api = ["--api", a.url]

    def origins_known() -> bool:
        out = cli(*api, "origins", "--json").stdout
        return {o["id"]: o["verdict"] for o in json.loads(out)} == {"good": "up", "bad": "down"}

    wait_for(origins_known, 15, "verdicts via the CLI")
    table = cli(*api, "origins").stdout.splitlines()
    assert table[0].split()[:5] == ["ORIGIN", "VERDICT", "LATENCY", "OWNERS", "MINE"]
    assert any(line.startswith("bad ") and " down " in line for line in table)
    # columns line up: every row has VERDICT, OWNERS and MINE where the header has them
    for name in ("VERDICT", "OWNERS", "MINE"):
        col = table[0].index(name)
        assert all(line[col - 1] == " " and line[col] != " " for line in table[1:]), name
    assert all(line[table[0].index("MINE") :].split()[0] == "yes" for line in table[1:])
    mine = cli(*api, "origins", "--mine", "--json")
    assert mine.returncode == 0
    assert sorted(o["id"] for o in json.loads(mine.stdout)) == ["bad", "good"]  # alone: all

    status = cli(*api, "status")
    assert status.returncode == 0, status.stderr
    out = status.stdout
    assert "cli-node" in out and "2 origins: 1 up, 1 down" in out
    assert "mine      2 checked by this node: 1 up, 1 down" in out
    assert "cluster   " in out and "edge: alone, no live peer" in out
    assert "storage   ok" in out
    health = json.loads(cli(*api, "status", "--json").stdout)["health"]
    assert health["status"] == "ok"

    # with --api the config is not read for the address: an invalid one is no obstacle
    bad = a.tmp / "invalid.toml"
    bad.write_text('[api]\nlisten = "nowhere"\n')
    for command in ("status", "origins", "members"):
        res = cli(*api, "--config", str(bad), command)
        assert res.returncode == 0 and not res.stderr, (command, res.stderr)
    led = health["led"]
    assert f"LEDs      {led['state']}: {led['meaning']}" in out
    # the troubled origin is listed under the summary, the healthy one is not
    assert any(line.startswith("bad ") for line in out.splitlines())
    assert not any(line.startswith("good ") for line in out.splitlines())

    members = cli(*api, "members").stdout.splitlines()
    assert members[0].split() == ["NAME", "ADDRESS", "STATE", "INC", "TAGS"]
    assert members[1].startswith("cli-node *")  # this node is starred
    assert "alive" in members[1] and "role=edge-agent" in members[1]
    a.stop()
    gone = cli(*api, "status")
    assert gone.returncode == 1 and "cannot reach the agent" in gone.stderr


def with_token(a: AgentProcess, token_file: Path) -> None:
    """Give the agent's [api] table a token_file (AgentProcess writes the table itself)."""
    text = a.config.read_text()
    assert text.count("[api]\n") == 1
    text = re.sub(r"(?m)^token_file = .*\n", "", text)  # the fleet token AgentProcess gave it
    a.config.write_text(text.replace("[api]\n", f'[api]\ntoken_file = "{token_file}"\n'))


def test_identify_sends_the_token_from_the_config(
    agent_process: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    a = agent_process("", name="blinky")
    with_token(a, token)
    a.start()
    a.wait_notify("READY=1")
    # through the config alone: the API address and the token both come from it
    res = cli("identify", "--seconds", "120", "--config", str(a.config))
    assert res.returncode == 0, res.stderr
    # no GPIO on a test machine: the LEDs are mock pins, and the answer must not claim a blink
    assert res.stdout.strip() == (
        "blinky: identify is on for 120 s, but its LEDs are mock pins (no GPIO here): "
        "nothing blinks"
    )
    _, health = a.get("/v1/health")
    assert 100 < health["identify_s"] <= 120
    assert "identify  blinking, " in cli("status", "--config", str(a.config)).stdout
    res = cli("identify", "--json", "--seconds", "60", "--config", str(a.config))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"node": "blinky", "seconds": 60, "leds": "mock"}

    # a config without the token is refused by the agent, and the CLI says why
    other = tmp_path / "no-token.toml"
    other.write_text("")
    res = cli("identify", "--api", a.url, "--config", str(other))
    assert res.returncode == 1
    assert "401" in res.stderr and "bearer token" in res.stderr

    res = cli("identify", "--node", "nobody", "--config", str(a.config))
    assert res.returncode == 1 and "404" in res.stderr and "nobody" in res.stderr


def test_identify_usage_and_an_unreadable_token(tmp_path: Path) -> None:
    for bad in ("0", "3601", "ten"):
        res = cli("identify", "--seconds", bad)
        assert res.returncode == 2 and "--seconds" in res.stderr, res.stderr
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[api]\nlisten = "127.0.0.1:9"\ntoken_file = "{tmp_path / "absent"}"\n')
    res = cli("identify", "--config", str(cfg))
    assert res.returncode == 1
    assert "cannot read the API token" in res.stderr and str(tmp_path / "absent") in res.stderr


# --- where client commands find the agent ---------------------------------------------------

CLIENTS = (["status"], ["origins"], ["members"], ["identify"])


def test_client_commands_refuse_an_invalid_config(tmp_path: Path) -> None:
    """An invalid config is an error naming the problem (exit 2), never a silent fallback
    to 127.0.0.1:8080: the agent may listen elsewhere, as that config meant to say."""
    cfg = tmp_path / "agent.toml"
    for text, problem in (
        ('[api]\nlisten = "nowhere"\n', 'api.listen: "nowhere" is not host:port'),
        ("[api\n", "not valid TOML"),
        ("[api]\nlisten = 8080\n", "api.listen: 8080 is not host:port"),
    ):
        cfg.write_text(text)
        for command in CLIENTS:
            res = cli(*command, "--config", str(cfg))
            assert res.returncode == 2, (command, text, res.stderr)
            assert f"{cfg}: {problem}" in res.stderr and "--api" in res.stderr, res.stderr
        res = cli("status", env={CONFIG_ENV: str(cfg)})  # the same when named by the env
        assert res.returncode == 2 and problem in res.stderr, res.stderr


def test_client_commands_refuse_a_named_config_that_is_missing(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    for named in (["--config", str(absent)], []):
        env = {} if named else {CONFIG_ENV: str(absent)}
        res = cli("status", *named, env=env)
        assert res.returncode == 2, res.stderr
        assert str(absent) in res.stderr and "no such file" in res.stderr, res.stderr


def test_without_a_config_file_the_default_address_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No file at the default path (a machine without an agent config): the documented
    default, ApiConfig's listen address, without a word."""
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.setattr(agent.shell.config, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    for command in CLIENTS:
        assert _api_base(build_parser().parse_args(command)) == "http://127.0.0.1:8080"
    assert capsys.readouterr() == ("", "")
    # a config that is there gives its address (any-address binds are reached on loopback)
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[api]\nlisten = "0.0.0.0:9181"\n')
    monkeypatch.setattr(agent.shell.config, "DEFAULT_CONFIG_PATH", cfg)
    assert _api_base(build_parser().parse_args(["status"])) == "http://127.0.0.1:9181"


def without_root_file_access() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the
    bounding set, so that even root is refused a file whose mode says no (as a user is)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_dac_override, cap_dac_read_search = 24, 1, 2
    for cap in (cap_dac_override, cap_dac_read_search):
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0 and os.geteuid() == 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_a_config_this_user_cannot_read_is_said_so(tmp_path: Path) -> None:
    """The image and Ansible install agent.toml 0640 root:edge-agent: an operator who may
    not read it still reaches the agent at the default address, and is told why."""
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[api]\nlisten = "127.0.0.1:9"\n')
    cfg.chmod(0)
    res = cli("status", "--config", str(cfg), preexec_fn=without_root_file_access)
    assert res.returncode != 2, res.stderr
    assert f"cannot read {cfg}" in res.stderr and "--api" in res.stderr, res.stderr


# --- formatting, from fixed documents --------------------------------------------------------

HEALTH: dict[str, Any] = {
    "node": "pi-a",
    "version": "1.2.3",
    "status": "degraded",
    "reasons": ["gossip: peers suspect this node"],
    "summary": "12 origins: 10 up, 1 down, 1 disputed; checking 4",
    "cluster": {"name": "shop-fleet", "peers": 2},
    "origins": {"up": 10, "down": 1, "disputed": 1, "unknown": 0},
    "mine": {"owned": 4, "up": 3, "down": 1, "disputed": 0, "unknown": 0},
    "led": {"state": "suspected", "meaning": "the other Pis hear this one badly"},
    "storage": {
        "status": "fault",
        "reason": "fsync: No space left on device",
        "bytes_written": 3 * 1024 * 1024,
        "fsyncs": 12,
        "snapshots": 1,
    },
    "identify_s": 0.0,
    "uptime_s": 100.0,
}


def origin(oid: str, verdict: str, owners: list[str], mine: bool, **obs: Any) -> dict[str, Any]:
    return {
        "id": oid,
        "spec": {"id": oid, "url": f"https://{oid}.example/healthz"},
        "verdict": verdict,
        "owners": owners,
        "mine": mine,
        "observations": [
            {
                "observer": owners[0],
                "status": "down",
                "since": 1.0,
                "latency_band": "<100ms",
                "latency_ms": None,
                "reason": "HTTP 503",
            },
            *([obs] if obs else []),
        ],
    }


ORIGINS = [
    origin(
        "shop",
        "down",
        ["pi-b", "pi-a"],
        True,
        observer="pi-a",
        status="down",
        since=1.0,
        latency_band="<100ms",
        latency_ms=41.6,
        reason="HTTP 500",
    ),
    origin("search", "disputed", ["pi-b", "pi-c"], False),
    origin("blog", "up", ["pi-c", "pi-b"], False),
]


def test_status_screen() -> None:
    text = status_text(HEALTH, ORIGINS)
    lines = text.splitlines()
    assert lines[:11] == [
        "node      pi-a  (edge-agent 1.2.3)",
        "status    degraded",
        "          - gossip: peers suspect this node",
        "cluster   shop-fleet: this node and 2 live peers",
        "origins   12 origins: 10 up, 1 down, 1 disputed",
        "mine      4 checked by this node: 3 up, 1 down, 0 disputed",
        "storage   fault: fsync: No space left on device  "
        "(3.0 MiB written, 12 fsyncs, 1 snapshots)",
        "LEDs      suspected: the other Pis hear this one badly",
        "",
        "origins not up (2 of 3):",  # a heading says what the table lists
        lines[10],
    ]
    assert lines[10].split()[:5] == ["ORIGIN", "VERDICT", "LATENCY", "OWNERS", "MINE"]
    # the troubled origins, with this node's own latency where it has one
    assert lines[11].split()[:5] == ["shop", "down", "42ms", "pi-b,pi-a", "yes"]
    assert lines[12].split()[:5] == ["search", "disputed", "<100ms", "pi-b,pi-c", "no"]
    assert len(lines) == 13  # "blog" is up: not on the status screen
    assert len(max(lines, key=len)) <= 100  # one ssh screen wide


def test_status_screen_heading_says_what_the_list_is() -> None:
    """The list under the summary is only the origins not up; a heading says so, with
    how many of how many, and a fleet with none troubled says that instead of nothing."""
    many = [origin(f"o{i:04}", "up", ["pi-a"], True) for i in range(1_003)]
    many[5]["verdict"] = "down"
    many[9]["verdict"] = "unknown"
    lines = status_text(HEALTH, many).splitlines()
    assert "origins not up (2 of 1,003):" in lines
    for o in many:
        o["verdict"] = "up"
    lines = status_text(HEALTH, many).splitlines()
    assert lines[-2:] == ["", "all 1,003 origins up"]
    assert status_text(HEALTH, many[:1]).splitlines()[-1] == "the 1 origin is up"
    assert "origins" not in status_text(HEALTH, []).splitlines()[-1]  # none: no heading


def test_status_screen_says_when_no_led_lights() -> None:
    for kind, said in (
        ("none", ["          (no LEDs enabled here: nothing lights)"]),
        ("mock", ["          (mock pins: no GPIO here, nothing lights)"]),
        ("gpio", []),
    ):
        health = {**HEALTH, "led": {**HEALTH["led"], "kind": kind}}
        lines = status_text(health, []).splitlines()
        at = lines.index("LEDs      suspected: the other Pis hear this one badly")
        assert lines[at + 1 : at + 1 + len(said)] == said
        assert len(max(lines, key=len)) <= 100


def test_status_screen_of_an_older_agent_leaves_out_what_it_does_not_say() -> None:
    old = {
        "node": "pi-z",
        "version": "0.1",
        "status": "ok",
        "reasons": [],
        "summary": "1 origin: 1 up",
    }
    assert status_text(old, []).splitlines() == [
        "node      pi-z  (edge-agent 0.1)",
        "status    ok",
        "origins   1 origin: 1 up",
    ]


def test_status_screen_stays_one_screen() -> None:
    many = [origin(f"o{i:03}", "down", ["pi-a"], True) for i in range(50)]
    lines = status_text({**HEALTH, "identify_s": 12.4}, many).splitlines()
    assert "identify  blinking, 12 s left" in lines
    assert lines[-1] == f"… and {50 - STATUS_ORIGIN_ROWS} more: edge-agent origins"
    assert len(lines) < 25


def test_origins_and_members_tables_align() -> None:
    lines = origins_table(ORIGINS).splitlines()
    header = lines[0]
    for name in ("VERDICT", "LATENCY", "OWNERS", "MINE", "TARGET", "LAST CHECK"):
        col = header.index(name)
        assert all(line[col - 1] == " " and line[col] != " " for line in lines[1:]), name
    assert lines[3].split()[4] == "no" and lines[3].endswith("HTTP 503")
    members = [
        {
            "name": "pi-a",
            "addr": "10.0.0.1",
            "port": 7946,
            "state": "alive",
            "incarnation": 3,
            "tags": {"role": "edge-agent", "v": "1"},
        },
        {
            "name": "pi-bbbb",
            "addr": "10.0.0.22",
            "port": 7946,
            "state": "suspect",
            "incarnation": 11,
            "tags": {},
        },
    ]
    lines = members_table(members, "pi-a").splitlines()
    assert lines == [
        "NAME     ADDRESS         STATE    INC  TAGS",
        "pi-a *   10.0.0.1:7946   alive    3    role=edge-agent,v=1",
        "pi-bbbb  10.0.0.22:7946  suspect  11",
    ]


def _verify_paths(tmp_path: Path, certs: int, hashed: int) -> Any:
    import ssl

    capath = tmp_path / "certs"
    capath.mkdir(parents=True)
    for i in range(hashed):
        (capath / f"{i:08x}.0").write_text("")
    (capath / "ca-certificates.crt").write_text("")  # not a hashed name: not counted
    cafile = tmp_path / "bundle.pem"
    pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    cafile.write_text(pem * certs)
    return ssl.DefaultVerifyPaths(
        str(cafile), str(capath), "SSL_CERT_FILE", str(cafile), "SSL_CERT_DIR", str(capath)
    )


def test_lazy_ca_store_only_when_the_hashed_directory_covers_the_default_bundle(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import os
    import ssl

    from agent.shell.cli import lazy_ca_store

    paths = _verify_paths(tmp_path, certs=3, hashed=3)
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)
    env: dict[str, str] = {}
    assert lazy_ca_store(env) and env == {"SSL_CERT_FILE": os.devnull}
    # the defaults spelled out by the environment are still the defaults
    env = {"SSL_CERT_FILE": paths.openssl_cafile, "SSL_CERT_DIR": paths.openssl_capath}
    assert lazy_ca_store(env) and env["SSL_CERT_FILE"] == os.devnull
    # an operator's own bundle or directory is left alone
    for own in ({"SSL_CERT_FILE": str(tmp_path / "mine.pem")}, {"SSL_CERT_DIR": str(tmp_path)}):
        env = dict(own)
        assert not lazy_ca_store(env) and env == own
    # a directory missing some of the bundle's certificates: keep loading the bundle
    fewer = _verify_paths(tmp_path / "fewer", certs=3, hashed=2)
    monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: fewer)
    env = {}
    assert not lazy_ca_store(env) and env == {}


@pytest.mark.parametrize(
    ("flag", "where", "rc", "said"),
    [
        ("notaurl", "before", 2, "argument --api: 'notaurl' is not the agent's address"),
        ("notaurl", "after", 2, "argument --api: 'notaurl' is not the agent's address"),
        ("ftp://h:1", "before", 2, "the scheme must be http or https"),
        ("http://h:99999", "before", 2, "Port out of range"),
        ("http://h:8080/v1", "before", 2, "without a path"),
        ("[::1", "before", 2, "unclosed '['"),
        # host:port is an address: the client only cannot reach it
        ("127.0.0.1:1", "before", 1, "cannot reach the agent at http://127.0.0.1:1"),
        ("http://[::1]:1/", "after", 1, "cannot reach the agent at http://[::1]:1"),
    ],
)
def test_the_api_flag_is_checked_where_it_is_given(
    flag: str, where: str, rc: int, said: str
) -> None:
    args = ["--api", flag, "status"] if where == "before" else ["status", "--api", flag]
    res = cli(*args)
    assert res.returncode == rc, res.stderr
    assert said in res.stderr
    assert "Traceback" not in res.stderr


def test_a_reader_that_stops_early_is_not_an_error() -> None:
    """`edge-agent origins --json | head -1`: the pipe closes long before the output ends
    (20,000 origins are far more than a pipe buffer); that is the reader's choice, not a
    failure: no traceback, exit 0."""
    import http.server
    import threading

    body = json.dumps([{"id": f"o{i}", "verdict": "up"} for i in range(20_000)]).encode()

    class Origins(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origins)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        environ = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "agent.shell.cli"),
                *("--api", f"127.0.0.1:{server.server_port}", "origins", "--json"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
        )
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline().strip() == b"["
        proc.stdout.close()  # as `head -1` does
        err = proc.stderr.read().decode()
        assert proc.wait(30) == 0, err
        assert "Traceback" not in err and "BrokenPipe" not in err, err
        # and `status | head -1`, whose whole answer fits the pipe: quiet too. This server
        # is no agent (a list where /v1/health is an object): said so, exit 1
        api = f"127.0.0.1:{server.server_port}"
        res = subprocess.run(
            f"{sys.executable} -m agent.shell.cli --api {api} status | head -1",
            shell=True,
            capture_output=True,
            text=True,
            env=environ,
            timeout=60,
        )
        assert "Traceback" not in res.stderr and "not an answer edge-agent understands" in (
            res.stderr
        ), res.stderr
        for command in (["status"], ["origins", "--mine"]):
            res = cli("--api", api, *command, "--json")
            assert json.loads(res.stdout)["error"].endswith("is it an agent?"), res.stdout
            assert res.returncode == 1 and "Traceback" not in res.stderr
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_file_that_cannot_be_read_says_so_to_writers_and_in_health(
    agent_process: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    """A missing token file used to turn every write into "missing or wrong bearer
    token", even with the right token, and /v1/health showed nothing wrong."""
    token = tmp_path / "token"  # not there yet
    a = agent_process("", name="t")
    with_token(a, token)
    a.start()
    a.wait_notify("READY=1")
    _, health = a.get("/v1/health")
    assert health["status"] == "degraded", health
    assert any(f"the API token file {token} cannot be read" in r for r in health["reasons"])

    def identify(bearer: str) -> tuple[int, dict[str, Any]]:
        req = urllib.request.Request(
            a.url + "/v1/identify",
            data=b'{"seconds": 5}',
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {bearer}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as e:
            return e.code, json.load(e)

    status, body = identify("s3cret")  # the right token, but the node cannot check it
    assert status == 503, body
    assert f"the API token file {token} cannot be read" in body["error"]
    token.write_text("s3cret\n")  # the operator fixes it: no restart needed
    assert identify("s3cret")[0] == 202
    assert identify("wrong")[0] == 401
    wait_for(lambda: a.get("/v1/health")[1]["status"] == "ok", 10, "the fault to clear")


# --- CLI conventions: --help, --json, exit codes -----------------------------------------------


def test_every_option_of_every_command_has_help_and_the_exit_codes_are_said() -> None:
    import argparse

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in [("edge-agent", parser), *commands.choices.items()]:
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (name, action.option_strings or action.dest)
        text = sub.format_help()
        for line in ("0  ok", "1  runtime error", "2  usage or config error"):
            assert line in text, (name, text)
    for command in ("status", "origins", "members", "identify"):
        text = commands.choices[command].format_help()
        for option in ("--api", "--config", "--socket", "--json"):
            assert option in text, (command, option)


def test_json_is_always_json(tmp_path: Path) -> None:
    """`--json` answers in JSON whatever happens: an agent that cannot be reached is an
    error object (exit 1), a usage or config error too (exit 2); nothing on stdout is text."""
    cfg = tmp_path / "agent.toml"
    sock = tmp_path / "api.sock"
    cfg.write_text(f'[api]\nlisten = "127.0.0.1:1"\nsocket = "{sock}"\n')
    for command in CLIENTS:
        res = cli(*command, "--json", "--config", str(cfg))
        assert res.returncode == 1, (command, res.stdout, res.stderr)
        doc = json.loads(res.stdout)
        assert doc["api"] == "http://127.0.0.1:1" and doc["socket"] == str(sock), doc
        assert "cannot reach the agent at http://127.0.0.1:1" in doc["error"], doc
        assert f"nor on its socket {sock}" in doc["error"], doc
        if command == ["status"]:
            assert doc["status"] is None
    for args in (
        ["status", "--json", "--bogus"],
        ["status", "--json", "--api", "notaurl"],
        ["identify", "--json", "--seconds", "0"],
    ):
        res = cli(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        doc = json.loads(res.stdout)
        assert doc["error"].startswith("edge-agent") and doc["usage"].startswith("usage:"), doc
        assert not res.stderr
    cfg.write_text('[api]\nlisten = "nowhere"\n')
    res = cli("origins", "--json", "--config", str(cfg))
    assert res.returncode == 2
    assert 'api.listen: "nowhere" is not host:port' in json.loads(res.stdout)["error"]
    # without --json an error is a line on stderr, as before
    res = cli("status", "--bogus")
    assert res.returncode == 2 and not res.stdout and "unrecognized arguments" in res.stderr


def test_client_commands_read_the_local_socket_first(
    agent_process: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    """The agent serves its API on a Unix socket as well; the CLI tries it first, so a
    client config whose TCP address is wrong (or a port that is taken) still reaches it.
    A write over the socket counts as local, as one from loopback does."""
    a = agent_process("", name="sockety", token=None)
    a.start()
    a.wait_notify("READY=1")
    sock = a.tmp / "data" / "api.sock"  # the default next to a non-packaged data_dir
    wait_for(sock.is_socket, 10, "the API socket")
    assert oct(sock.stat().st_mode & 0o777) == "0o660"
    client = tmp_path / "client.toml"
    client.write_text(f'[node]\ndata_dir = "{a.tmp / "data"}"\n[api]\nlisten = "127.0.0.1:1"\n')
    res = cli("status", "--json", "--config", str(client))
    assert res.returncode == 0, res.stdout
    assert json.loads(res.stdout)["health"]["node"] == "sockety"
    res = cli("--socket", str(sock), "members")
    assert res.returncode == 0 and res.stdout.splitlines()[1].startswith("sockety *"), res
    # no token on this node: identify is allowed from this host, over the socket too
    res = cli("identify", "--socket", str(sock), "--seconds", "5")
    assert res.returncode == 0, res.stderr
    assert "sockety" in res.stdout and "nothing blinks" in res.stdout
    # --api means TCP only: the wrong address is not rescued by the socket
    res = cli("status", "--api", "127.0.0.1:1", "--config", str(client))
    assert res.returncode == 1 and "cannot reach the agent at http://127.0.0.1:1" in res.stderr
    assert "socket" not in res.stderr
    assert a.stop() == 0
    assert not sock.exists()  # removed at a clean stop
    res = cli("status", "--socket", str(sock))
    assert res.returncode == 1 and f"cannot reach the agent on its socket {sock}" in res.stderr


def test_identify_says_when_nothing_blinks_and_healthy_alone_is_not_in_a_cluster(
    agent_process: Callable[..., AgentProcess],
) -> None:
    """[leds] enabled = false: identify must not claim LEDs are flashing. A node alone by
    design (no join, discover off) must not show "healthy: in the cluster"."""
    a = agent_process("[leds]\nenabled = false\n", name="dark").start()
    a.wait_notify("READY=1")
    res = cli("identify", "--api", a.url, "--config", str(a.config), "--seconds", "5")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("dark has no LEDs enabled: nothing blinks"), res.stdout
    _, health = a.get("/v1/health")
    assert health["led"]["kind"] == "none"
    wait_for(lambda: a.get("/v1/health")[1]["led"]["state"] == "healthy", 15, "healthy")
    led = a.get("/v1/health")[1]["led"]
    assert led["meaning"].startswith("alone by design (no peer to look for)"), led
    assert "in the cluster" not in cli("status", "--api", a.url).stdout
    assert a.stop() == 0


@pytest.mark.parametrize(
    ("socket_line", "said"),
    [
        ('socket = "/run/' + "x" * 120 + '.sock"', 'api.socket: "/run/xxx'),
        ('socket = "api.sock"', 'api.socket: "api.sock" is not an absolute path'),
        (
            'socket = "{d}/file/run/api.sock"',
            "api.socket: its directory {d}/file/run cannot be created",
        ),
    ],
)
def test_check_config_checks_the_api_socket(tmp_path: Path, socket_line: str, said: str) -> None:
    (tmp_path / "file").write_text("")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n[api]\n{socket_line.format(d=tmp_path)}\n'
    )
    res = cli("check-config", str(cfg))
    assert res.returncode == 2, res.stdout
    assert said.format(d=tmp_path) in res.stderr, res.stderr
    if "xxx" in said:
        assert "a Unix socket path may have at most 107" in res.stderr
    # derived from a data_dir whose path is too long for a socket: said with its origin
    deep = tmp_path / ("d" * 100)
    cfg.write_text(f'[node]\ndata_dir = "{deep}"\n')
    res = cli("check-config", str(cfg))
    assert res.returncode == 2
    assert "api.socket (derived from node.data_dir): " in res.stderr, res.stderr
