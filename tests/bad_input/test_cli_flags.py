"""The CLI table: flags and arguments a new user gets wrong. Each exits with the documented
code (2 usage or config, 1 agent unreachable) and a message naming the flag; never a
traceback. Output texts of status/identify are another table's business: only the exit
code and stderr's message are checked here."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.shell import cli
from tests.bad_input.support import cli as run_cli
from tests.conftest import free_port

DOWN = f"127.0.0.1:{free_port()}"  # nothing listens there

CASES = [
    # (id, argv, exit code, fragment of stderr)
    ("api-not-a-url", ["--api", "notaurl", "status"], 2, "argument --api: 'notaurl'"),
    ("api-no-scheme", ["--api", DOWN, "status"], 1, f"cannot reach the agent at http://{DOWN}"),
    ("api-ftp", ["--api", "ftp://h:1", "status"], 2, "the scheme must be http or https"),
    ("api-path", ["--api", "http://h:1/v1", "status"], 2, "without a path"),
    ("api-fragment", ["--api", "http://h:1#x", "status"], 2, "without a path"),
    ("api-bad-port", ["--api", "http://h:99999", "status"], 2, "argument --api"),
    ("api-empty", ["--api", "", "status"], 2, "missing host"),
    ("api-space", ["--api", "exa mple:80", "status"], 2, "white space"),
    ("api-ipv6-unclosed", ["--api", "http://[::1", "status"], 2, "argument --api"),
    ("api-ipv6-ok-but-down", ["--api", "[::1]:1", "origins"], 1, "cannot reach the agent"),
    ("api-after-command", ["status", "--api", "notaurl"], 2, "argument --api"),
    ("api-missing-value", ["status", "--api"], 2, "expected one argument"),
    ("unknown-subcommand", ["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    ("no-subcommand", [], 2, "usage: edge-agent"),
    ("unknown-flag", ["check-config", "--bogus"], 2, "unrecognized arguments: --bogus"),
    ("extra-argument", ["keygen", "extra"], 2, "unrecognized arguments: extra"),
    ("seconds-zero", ["identify", "--seconds", "0"], 2, "0 is not between 1 and 3600"),
    ("seconds-text", ["identify", "--seconds", "abc"], 2, "'abc' is not a whole number"),
    ("seconds-huge", ["identify", "--seconds", "9" * 30], 2, "is not between 1 and 3600"),
    ("seconds-negative", ["identify", "--seconds=-5"], 2, "-5 is not between 1 and 3600"),
    ("config-missing", ["--config", "/nonexistent.toml", "status"], 2, "no such file"),
    ("config-a-directory", ["--config", "/tmp", "status"], 2, "/tmp: cannot read"),
    ("config-10kb-path", ["--config", "/tmp/" + "a" * 10240, "status"], 2, "cannot read"),
    ("run-config-missing", ["run", "--config", "/nonexistent.toml"], 2, "cannot read"),
    ("members-down", ["--api", DOWN, "members"], 1, "is it running?"),
    ("origin-no-command", ["origin"], 2, "name a command: add, rm, apply or export"),
    ("origin-add-no-url", ["origin", "add", "web-1"], 2, "the following arguments are required"),
    ("origin-add-rise-text", ["origin", "add", "a", "http://a/", "--rise", "x"], 2, "--rise"),
    ("origin-add-bad-url", ["origin", "add", "a", "a.example"], 2, 'URL: "a.example" is not'),
    (
        "origin-add-bad-status",
        ["origin", "add", "a", "http://a/", "--expect-status", "2x"],
        2,
        '--expect-status: ["2x"] is not a list of status codes',
    ),
    ("origin-rm-no-id", ["origin", "rm"], 2, "the following arguments are required: ID"),
    ("origin-apply-no-file", ["origin", "apply"], 2, "the following arguments are required"),
    ("origin-apply-missing", ["origin", "apply", "/nonexistent.toml"], 2, "cannot read it"),
    ("origin-apply-dir", ["origin", "apply", "/tmp"], 2, "/tmp: cannot read it (Is a dir"),
    ("origin-export-format", ["origin", "export", "--format", "yaml"], 2, "invalid choice"),
    ("origin-export-down", ["origin", "export", "--api", DOWN], 1, "is it running?"),
]


@pytest.mark.parametrize(("argv", "rc", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_cli(
    argv: list[str],
    rc: int,
    says: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EDGE_AGENT_CONFIG", raising=False)
    try:
        got = cli.main(argv)
    except SystemExit as e:  # argparse's own usage errors
        got = int(e.code or 0)
    out, err = capsys.readouterr()
    assert got == rc, f"exit {got}, not {rc}:\n{out}{err}"
    assert says in err, f"{says!r} not in:\n{err}"
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    "argv",
    [["--api", "notaurl", "status"], ["--api", DOWN, "status"], ["frobnicate"]],
    ids=["api-not-a-url", "api-no-scheme", "unknown-subcommand"],
)
def test_as_a_real_process(argv: list[str], tmp_path: Path) -> None:
    rc, out, err = run_cli(*argv, cwd=tmp_path)
    assert rc in (1, 2) and err.strip(), (rc, out, err)
    assert "Traceback" not in out + err
