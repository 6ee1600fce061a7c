"""Config parsing: every error class names the file and the key path; exit code 2."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from agent.domain.durations import parse_duration
from agent.domain.origin import OriginSpec
from agent.domain.problems import ConfigError
from agent.membership.settings import Settings as GossipSettings
from agent.shell.config import (
    ApiConfig,
    ChecksConfig,
    ClusterConfig,
    Config,
    HostPort,
    LbConfig,
    LedsConfig,
    LogConfig,
    NodeConfig,
    StoreConfig,
    WebhookConfig,
    load_config,
    parse_config,
    parse_hostport,
)

ROOT = Path(__file__).resolve().parent.parent


def problems(text: str, tmp_path: Path) -> list[str]:
    f = tmp_path / "agent.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as ei:
        load_config(f)
    assert str(f) in str(ei.value)
    return ei.value.problems


def test_defaults_are_documented_values() -> None:
    cfg = parse_config({})
    assert cfg.cluster.bind == HostPort("0.0.0.0", 7946)
    assert cfg.cluster.replicas == 2
    assert cfg.api.listen == HostPort("127.0.0.1", 8080)
    assert (cfg.leds.green, cfg.leds.amber, cfg.leds.red) == (17, 27, 22)
    assert cfg.origins == ()


def test_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "examples" / "agent.toml")
    assert [o.id for o in cfg.origins] == ["shop", "db"]
    shop, db = cfg.origins
    assert shop.kind == "http" and shop.tls and shop.port == 443
    assert (shop.interval, shop.timeout, shop.rise, shop.fall) == (10.0, 2.0, 2, 3)
    assert db.kind == "tcp" and (db.host, db.port) == ("db.example.com", 5432)


def test_config_is_immutable() -> None:
    cfg = parse_config({"node": {"tags": {"a": "b"}}})
    with pytest.raises(AttributeError):
        cfg.node.weight = 2.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.node.tags["a"] = "c"  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("10s", 10), ("2m", 120), ("1h", 3600), ("1m30s", 90), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10x", "", "s", "10", "1s 2s", "-1s", "10sec"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_hostport() -> None:
    assert parse_hostport("[::1]:80") == HostPort("::1", 80)
    assert parse_hostport("a.local", default_port=7946) == HostPort("a.local", 7946)
    for bad in ("h:99999", "::1:80", "h:", ":80", "[::1"):
        with pytest.raises(ValueError):
            parse_hostport(bad)


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        # a bad duration, exactly as the issue spells it
        (
            '[[origin]]\nid="a"\nurl="http://x"\n[[origin]]\nid="b"\nurl="http://x"\n'
            '[[origin]]\nid="c"\nurl="http://x"\ninterval="10x"\n',
            'origin[2].interval: "10x" is not a duration',
        ),
        ("[node]\nweigth = 2\n", "node.weigth: unknown key"),
        ("[bogus]\n", "bogus: unknown key"),
        ('[[origin]]\nid="a"\nurl="http://x"\ncolour="red"\n', "origin[0].colour: unknown key"),
        ('[cluster]\nreplicas = "two"\n', 'cluster.replicas: "two" is not an integer'),
        ("[cluster]\ndiscover = 1\n", "cluster.discover: 1 is not true or false"),
        ('[node]\nweight = "heavy"\n', 'node.weight: "heavy" is not a number'),
        ('[api]\nlisten = "nowhere"\n', 'api.listen: "nowhere" is not host:port'),
        ("[api]\nlisten = 8080\n", "api.listen: 8080 is not host:port"),
        ("[cluster]\nbind = 7946\n", "cluster.bind: 7946 is not host:port"),
        ('[cluster]\nadvertise = ["a:1"]\n', 'cluster.advertise: ["a:1"] is not host:port'),
        ('[cluster]\njoin = ["a:1", 5]\n', "cluster.join[1]: 5 is not a string"),
        ('[[origin]]\nid="a"\nurl="ftp://x"\n', 'origin[0].url: "ftp://x" is not a valid URL'),
        ('[[origin]]\nid="a"\nurl="tcp://db"\n', "tcp:// needs a port"),
        ('[[origin]]\nid="a"\nurl="http://x:99999/"\n', 'origin[0].url: "http://x:99999/"'),
        ('[[origin]]\nid="a"\n', "origin[0].url: missing"),
        ('[[origin]]\nurl="http://x"\n', "origin[0].id: missing"),
        ('[[origin]]\nid="a b"\nurl="http://x"\n', 'origin[0].id: "a b" is not a valid id'),
        (
            '[[origin]]\nid="a"\nurl="http://x"\n[[origin]]\nid="a"\nurl="http://y"\n',
            'origin[1].id: duplicate id "a" (also origin[0])',
        ),
        ('[[origin]]\nid="a"\nurl="http://x"\nrise=0\n', "origin[0].rise: 0 is out of range"),
        (
            '[[origin]]\nid="a"\nurl="http://x"\ninterval="1s"\ntimeout="5s"\n',
            'origin[0].timeout: "5s" is longer than the interval',
        ),
        (
            '[[origin]]\nid="a"\nurl="http://x"\nexpect_status=[700]\n',
            "origin[0].expect_status: [700] is not a list of status codes",
        ),
        ('[[origin]]\nid="a"\nurl="http://x"\nmethod="BREW"\n', 'origin[0].method: "BREW"'),
        ('[[origin]]\nid="a"\nurl="tcp://h:1"\nmethod="GET"\n', "applies only to http(s)"),
        ("[leds]\ngreen = 40\n", "leds.green: 40 is not a BCM pin"),
        ("[leds]\ngreen = 5\nred = 5\n", "leds: two colours share one pin"),
        ('[leds]\nlayout = "ring"\n', 'leds.layout: must be "three" or "rgb"'),
        ('[leds]\nlayout = "rgb"\n', "leds.rgb: needed with layout"),
        ('[leds]\nlayout = "rgb"\nrgb = [5, 6]\n', "leds.rgb: [5, 6] is not three BCM pins"),
        ('[leds]\nlayout = "rgb"\nrgb = [5, 6, 40]\n', "is not three BCM pins"),
        ('[leds]\nlayout = "rgb"\nrgb = [5, 6, 5]\n', "leds: two colours share one pin"),
        ('[leds]\nlayout = "rgb"\nrgb = [5, 6, 7]\ngreen = 8\n', "leds.green: not used with"),
        ('[leds]\nact = "yes"\n', 'leds.act: "yes" is not true or false'),
        ('[log]\nlevel = "loud"\n', 'log.level: "loud" is not one of'),
        ("origin = 3\n", "origin: must be an array of tables"),
        ('[lb]\nagent_listen = "nowhere"\n', 'lb.agent_listen: "nowhere" is not host:port'),
        ("[lb]\nagent_listen = 7950\n", "lb.agent_listen: 7950 is not host:port"),
        ("[lb]\nmax_connections = 0\n", "lb.max_connections: 0 is out of range"),
        ('[lb]\nmax_connections = "many"\n', 'lb.max_connections: "many" is not an integer'),
        ('[lb]\nread_timeout = "0s"\n', 'lb.read_timeout: "0s" must be longer than 0'),
        ('[lb]\nread_timeout = "2m"\n', "lb.read_timeout: 120s is out of range"),
        ("[lb]\nlisten = 1\n", "lb.listen: unknown key"),
        (
            '[[origin]]\nid="a"\nurl="http://x"\naddress="x"\n',
            'origin[0].address: "x" is not host:port (missing :port)',
        ),
        (
            '[[origin]]\nid="a"\nurl="http://x"\naddress="::1:80"\n',
            'origin[0].address: "::1:80" is not host:port (IPv6 addresses need brackets',
        ),
        ('[[origin]]\nid="a"\nurl="http://x"\naddress="h:0"\n', "port 0 is no port"),
        ('[[origin]]\nid="a"\nurl="http://x"\naddress="a<b>:1"\n', "is not a host name"),
        ('[[origin]]\nid="a"\nurl="http://x"\naddress=80\n', 'address: 80 is not "host:port"'),
        ('[[origin]]\nid="a"\nurl="http://x"\nfail_open="no"\n', 'fail_open: "no" is not true'),
    ],
)
def test_each_error_names_its_key(toml: str, expected: str, tmp_path: Path) -> None:
    found = problems(toml, tmp_path)
    assert any(expected in p for p in found), found


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    found = problems('[node]\nx=1\n[cluster]\ny=2\n[[origin]]\nid="a"\nurl="ftp://q"\n', tmp_path)
    assert len(found) == 3


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    assert "cannot read" in problems_for_missing(tmp_path)
    assert any("not valid TOML" in p for p in problems("[node\n", tmp_path))
    f = tmp_path / "bin.toml"
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(f)


def problems_for_missing(tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as ei:
        load_config(tmp_path / "nope.toml")
    return str(ei.value)


def test_leds_table_lists_the_colours_in_use() -> None:
    cfg = parse_config({"leds": {"green": 5}})
    assert (cfg.leds.green, cfg.leds.amber, cfg.leds.red) == (5, None, None)
    cfg = parse_config({"leds": {"green": 5, "red": False}})
    assert cfg.leds.red is None


def test_leds_rgb_layout_and_act_mirror() -> None:
    d = parse_config({}).leds
    assert (d.layout, d.rgb, d.common_anode, d.act) == ("three", None, False, False)
    leds = {"layout": "rgb", "rgb": [5, 6, 13], "act": True, "common_anode": True}
    cfg = parse_config({"leds": leds})
    assert cfg.leds.layout == "rgb" and cfg.leds.rgb == (5, 6, 13) and cfg.leds.act
    assert cfg.leds.common_anode
    assert (cfg.leds.green, cfg.leds.amber, cfg.leds.red) == (None, None, None)
    cfg = parse_config({"leds": {"green": 5, "rgb": [6, 7, 8]}})  # rgb pins unused: three
    assert cfg.leds.layout == "three" and cfg.leds.rgb is None and cfg.leds.green == 5


def test_status_classes_expand() -> None:
    cfg = parse_config({"origin": [{"id": "a", "url": "http://x", "expect_status": ["2xx", 301]}]})
    assert 204 in cfg.origins[0].expect_status and 301 in cfg.origins[0].expect_status
    assert 300 not in cfg.origins[0].expect_status


def edge_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.shell.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_check_config_cli_exit_codes(tmp_path: Path) -> None:
    good = edge_agent("check-config", str(ROOT / "examples" / "agent.toml"))
    assert good.returncode == 0, good.stderr
    assert "ok (2 origins;" in good.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[[origin]]\nid="x"\nurl="http://h"\ninterval="10x"\n')
    res = edge_agent("check-config", str(bad))
    assert res.returncode == 2
    assert f'{bad}: origin[0].interval: "10x" is not a duration' in res.stderr


def test_run_with_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[cluster]\nreplicas = 0\n")
    res = edge_agent("run", "--config", str(bad))
    assert res.returncode == 2
    assert "cluster.replicas: 0 is out of range" in res.stderr


# --- defaults are stated once: the dataclasses -----------------------------------------------


def test_an_empty_config_is_the_dataclass_defaults() -> None:
    """Every section the parser reads defaults to its dataclass's own field defaults, so the
    two can never drift (the parser reads them; this guards that it keeps doing so)."""
    cfg = parse_config({}, "<defaults>")
    assert cfg == Config()
    for section in ("node", "cluster", "store", "gossip", "api", "checks", "log", "lb"):
        # an empty table is the same as an absent one
        assert getattr(parse_config({section: {}}), section) == getattr(Config(), section)
    assert cfg.gossip == GossipSettings()
    assert cfg.leds == LedsConfig()
    # except [leds]: a present table lists the colours in use, so an empty one drives none
    assert parse_config({"leds": {}}).leds == LedsConfig(green=None, amber=None, red=None)


def test_origin_and_webhook_defaults_are_their_dataclass_defaults() -> None:
    cfg = parse_config(
        {"origin": [{"id": "o", "url": "http://h/"}], "webhook": [{"url": "http://w/"}]}
    )
    assert cfg.origins == (OriginSpec(id="o", url="http://h/", kind="http", host="h", port=80),)
    assert cfg.webhooks == (WebhookConfig(url="http://w/"),)
    # the default timeout never exceeds the interval: the dataclass's, capped by it
    short = parse_config({"origin": [{"id": "o", "url": "tcp://h:1", "interval": "500ms"}]})
    assert short.origins[0].timeout == 0.5


SECTIONS = {
    "node": NodeConfig,
    "cluster": ClusterConfig,
    "store": StoreConfig,
    "gossip": GossipSettings,
    "api": ApiConfig,
    "leds": LedsConfig,
    "checks": ChecksConfig,
    "log": LogConfig,
    "lb": LbConfig,
}
WRONG_TYPES: list[Any] = [5, -1, 1.5, True, "x", [1], ["a"], {"a": 1}, {"a": "b"}, 10**30]


def test_a_value_of_any_type_is_a_config_error_never_a_crash() -> None:
    """Every key of every section (and of an origin and a webhook), given each TOML type:
    ConfigError naming the key, or a valid config; never another exception."""
    cases: list[dict[str, Any]] = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            cases += [{section: {f.name: v}} for v in WRONG_TYPES]
    for f in dataclasses.fields(OriginSpec):
        cases += [{"origin": [{"id": "o", "url": "http://h/", f.name: v}]} for v in WRONG_TYPES]
    for f in dataclasses.fields(WebhookConfig):
        cases += [{"webhook": [{"url": "http://w/", f.name: v}]} for v in WRONG_TYPES]
    for root in cases:
        try:
            parse_config(root)
        except ConfigError as e:
            assert e.problems, root


@pytest.mark.parametrize(
    ("case", "said"),
    [
        ("keyring missing", "cluster.keyring_file: {d}/keyring: cannot read (No such file"),
        ("keyring not base64", "cluster.keyring_file: {d}/keyring:"),
        ("token missing", "api.token_file: {d}/token: cannot read (No such file"),
        ("token empty", "api.token_file: {d}/token is empty"),
        ("data_dir a file", "node.data_dir: {d}/data is not a directory"),
        ("data_dir under a file", "node.data_dir: {d}/file/data cannot be created"),
    ],
)
def test_check_config_opens_the_files_the_config_names(
    tmp_path: Path, case: str, said: str
) -> None:
    """Valid TOML that names a file the agent cannot use is a config error (exit 2, the
    key named), not a surprise at the next restart: gossip off, writes refused."""
    d = tmp_path
    data = d / "data"
    lines = {"node": f'data_dir = "{data}"', "cluster": "", "api": ""}
    if case.startswith("keyring"):
        lines["cluster"] = f'keyring_file = "{d / "keyring"}"'
        if case == "keyring not base64":
            (d / "keyring").write_text("this is not a base64 key\n")
    elif case.startswith("token"):
        lines["api"] = f'token_file = "{d / "token"}"'
        if case == "token empty":
            (d / "token").write_text("\n")
    elif case == "data_dir a file":
        data.write_text("a file where the data directory should be\n")
    else:
        (d / "file").write_text("")
        lines["node"] = f'data_dir = "{d / "file" / "data"}"'
    cfg = d / "agent.toml"
    cfg.write_text("".join(f"[{t}]\n{body}\n" for t, body in lines.items()))
    res = edge_agent("check-config", str(cfg))
    assert res.returncode == 2, res.stdout
    assert f"{cfg}: " + said.format(d=d) in res.stderr, res.stderr


def test_check_config_accepts_usable_files(tmp_path: Path) -> None:
    keyring = tmp_path / "keyring"
    keyring.write_text(edge_agent("keygen").stdout)
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[node]\ndata_dir = "{tmp_path / "new" / "data"}"\n'
        f'[cluster]\nkeyring_file = "{keyring}"\n[api]\ntoken_file = "{token}"\n'
    )
    res = edge_agent("check-config", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "ok (0 origins; the files it names are usable)" in res.stdout


@pytest.mark.parametrize(
    ("body", "said"),
    [
        # each says what was wrong and, where it helps, what to write instead
        ('url = "http://exa mple.com/"', 'origin[0].url: "http://exa mple.com/" is not a valid'),
        ('url = "http://ex<am>ple.com/"', "is not a host name or address"),
        ('interval = "0s"', 'origin[0].interval: "0s" must be longer than 0'),
        (
            "interval = 10",
            'origin[0].interval: 10 is a number without a unit: write a duration, e.g. "10s"',
        ),
        ("timeout = 1.5", 'e.g. "1.5s"'),
        (
            "headers = {X = 1}",
            'origin[0].headers: a table has X = 1, not a string (quote it: X = "…")',
        ),
    ],
)
def test_origin_errors_say_what_to_write(body: str, said: str) -> None:
    text = '[[origin]]\nid = "a"\n' + ("" if body.startswith("url") else 'url = "http://h/"\n')
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads(text + body + "\n"))
    assert any(said in p for p in err.value.problems), err.value.problems


def test_a_webhook_url_of_the_wrong_type_is_one_error() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads("[[webhook]]\nurl = 5\n"))
    assert err.value.problems == ["webhook[0].url: 5 is not a string"]
    with pytest.raises(ConfigError) as err:
        parse_config(tomllib.loads('[[webhook]]\ntimeout = "1s"\n'))
    assert err.value.problems == [
        "webhook[0].url: missing (the http(s):// address to POST alerts to)"
    ]


def test_lb_section() -> None:
    """[lb]: off by default; an address turns the agent-check port on; "" is off too."""
    assert Config().lb == LbConfig(agent_listen=None, max_connections=1000, read_timeout=2.0)
    cfg = parse_config(
        tomllib.loads(
            '[lb]\nagent_listen = "[::1]:7950"\nmax_connections = 50\nread_timeout = "500ms"\n'
        )
    )
    assert cfg.lb == LbConfig(HostPort("::1", 7950), 50, 0.5)
    assert parse_config(tomllib.loads('[lb]\nagent_listen = ""\n')).lb.agent_listen is None


def test_origin_address_and_fail_open() -> None:
    """``address`` is kept in one spelling and emitted only when set; ``fail_open`` only
    when not the default (true), so existing specs encode exactly as before."""
    cfg = parse_config(
        tomllib.loads(
            '[[origin]]\nid = "a"\nurl = "http://check.local:8081/health"\n'
            'address = " [2001:db8::1]:443 "\nfail_open = false\n'
            '[[origin]]\nid = "b"\nurl = "tcp://db.local:5432"\n'
        )
    )
    a, b = cfg.origins
    assert (a.address, a.fail_open) == ("[2001:db8::1]:443", False)
    assert a.traffic_address == "[2001:db8::1]:443"
    assert a.to_dict()["address"] == "[2001:db8::1]:443" and a.to_dict()["fail_open"] is False
    assert (b.address, b.fail_open, b.traffic_address) == ("", True, "db.local:5432")
    assert "address" not in b.to_dict() and "fail_open" not in b.to_dict()
    v6 = parse_config(tomllib.loads('[[origin]]\nid = "c"\nurl = "http://[::1]:8080/"\n'))
    assert v6.origins[0].traffic_address == "[::1]:8080"


# --- [node] site: the failure domain (issue 19) -------------------------------------------


@pytest.mark.parametrize(
    ("node", "site"),
    [
        ({}, None),
        ({"site": ""}, None),
        ({"site": "store-12"}, "store-12"),
        ({"site": "Branch Köln 3"}, "Branch Köln 3"),  # spaces inside and UTF-8 are fine
        ({"site": "s" * 64}, "s" * 64),
        ({"tags": {"site": "lab"}}, "lab"),  # a tag written before the key existed
        ({"site": "lab", "tags": {"site": "lab"}}, "lab"),
        ({"tags": {"site": ""}}, None),
    ],
)
def test_node_site(node: dict[str, Any], site: str | None) -> None:
    assert parse_config({"node": node}).node.site == site


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"site": 3}, "node.site: 3 is not a string"),
        ({"site": "s" * 65}, "is longer than 64 bytes in UTF-8"),
        ({"site": "ü" * 33}, "is longer than 64 bytes in UTF-8"),  # 66 bytes
        ({"site": "a\tb"}, "contains a control or non-printable character"),
        ({"site": " rack"}, "starts or ends with a space"),
        ({"site": "a", "tags": {"site": "b"}}, 'differs from tags.site "b": set site only'),
        ({"tags": {"site": "x\n"}}, "(tags.site is the node's site)"),
    ],
)
def test_node_site_refused(node: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"node": node})
    assert message in str(e.value)


def test_site_is_advertised_and_fits_the_tag_budget(tmp_path: Path) -> None:
    """The site rides in the member tags; memberlist allows 512 bytes of them, and the
    longest site next to every tag the agent sets leaves room for the user's own."""
    from agent.membership import encode_tags
    from agent.node.placement import member_from_tags
    from agent.shell.cluster import Cluster

    site = "ü" * 32  # 64 bytes: the longest allowed
    cfg = parse_config({"node": {"data_dir": str(tmp_path), "site": site, "weight": 1.23456789}})
    cluster = Cluster(cfg, "edge-with-a-rather-long-hostname-07", api_port=65535)
    cluster.token_fingerprint = "AbCdEfGh"
    tags = cluster.tags()
    assert tags["site"] == site
    assert len(encode_tags(tags)) <= 512 - 256  # measured: 141 bytes
    member = member_from_tags("n", "alive", tags, proven=True)
    assert member.site == site
    plain = Cluster(parse_config({"node": {"data_dir": str(tmp_path)}}), "n").tags()
    assert "site" not in plain
