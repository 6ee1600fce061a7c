"""Real agents whose /metrics the monitoring tests read: a 3-node cluster on loopback
with origins in every state a node can report (up, down, unknown, https with a
certificate, tcp), webhooks configured and a lookup of an unknown id, so that every
metric family the agent has shows its series, not only its header.

Shared by test_promtool_metrics.py (promtool lints each node's /metrics) and
test_rules.py (the rules and the dashboard name only metrics a real agent serves).
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import AgentProcess, OriginServer, ThreadedApp, require, wait_for

CERT_DAYS = 30


def promtool() -> str:
    """Debian's promtool (package prometheus): a missing one fails under CI=true."""
    path = shutil.which("promtool")
    require(path is not None, "promtool (Debian package prometheus; scripts/bootstrap.sh)")
    assert path is not None
    return path


def amtool() -> str:
    path = shutil.which("amtool")
    require(path is not None, "amtool (Debian package prometheus-alertmanager)")
    assert path is not None
    return path


def check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition: it prints nothing when all is well."""
    return subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )


class TlsOrigin:
    """An https origin on 127.0.0.1 with a fresh self-signed certificate (CERT_DAYS)."""

    def __init__(self, tmp: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = dt.datetime.now(dt.UTC)
        self.not_after = (now + dt.timedelta(days=CERT_DAYS)).replace(microsecond=0)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(self.not_after)
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
            .sign(key, hashes.SHA256())
        )
        tmp.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)

        class Ok(http.server.BaseHTTPRequestHandler):
            # keep-alive: the probe reads the certificate from the connection while it is
            # open; an origin that closes after each answer (HTTP/1.0) reports no expiry
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ok)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


class Receiver(ThreadedApp):
    """A webhook receiver that takes every POST (the agent's delivery counters move)."""

    def __init__(self) -> None:
        from aiohttp import web

        self.posts = 0

        async def take(_: web.Request) -> web.Response:
            self.posts += 1
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_post("/hook", take)
        super().__init__(app)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


class Cluster:
    """Three `edge-agent run` nodes joined through n0, with every kind of origin.

    - ``up``: 200; ``down``: 500; ``tcp``: a listening port;
    - ``https``: the TLS origin, certificate not verified (self-signed);
    - ``unknown``: a port that completes the handshake but never answers, with a 30 s
      timeout: its first check is still running, so it has no status yet.
    """

    ORIGINS = ("up", "down", "tcp", "https", "unknown")

    def __init__(self, tmp: Path, nodes: int = 3) -> None:
        self.tmp = tmp
        self.origins = OriginServer()
        self.tls = TlsOrigin(tmp / "tls")
        self.receiver = Receiver()
        # accepts connections (the kernel's backlog) but never reads them
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(16)
        self.nodes: list[AgentProcess] = []
        config = f'[[webhook]]\nurl = "{self.receiver.url}"\n'
        for i in range(nodes):
            join = "" if i == 0 else f'join = ["127.0.0.1:{self.nodes[0].gossip_port}"]'
            node = AgentProcess(tmp / f"n{i}", config, name=f"n{i}", cluster=join)
            self.nodes.append(node)
            node.start()

    def bring_up(self) -> None:
        for node in self.nodes:
            node.wait_notify("READY=1", 30)
        n = len(self.nodes)
        wait_for(
            lambda: all(a.get("/v1/health")[1]["cluster"]["peers"] == n - 1 for a in self.nodes),
            30,
            "every node sees the others",
        )
        self.origins.down.add("down")
        silent_port = self.silent.getsockname()[1]
        specs: dict[str, dict[str, Any]] = {
            "up": {"url": self.origins.url("up"), "interval": "1s"},
            "down": {"url": self.origins.url("down"), "interval": "1s", "fall": 1},
            "tcp": {"url": f"tcp://127.0.0.1:{self.origins.port}", "interval": "1s"},
            "https": {"url": self.tls.url, "interval": "1s", "tls_verify": False},
            "unknown": {
                "url": f"http://127.0.0.1:{silent_port}/",
                "interval": "60s",
                "timeout": "30s",
            },
        }
        for oid, spec in specs.items():
            status, body = self.nodes[0].call("PUT", f"/v1/origins/{oid}", spec)
            assert status == 201, body
        want = {"up": "up", "down": "down", "tcp": "up", "https": "up", "unknown": "unknown"}
        for node in self.nodes:
            wait_for(
                lambda node=node: all(
                    node.get(f"/v1/origins/{o}")[1].get("verdict") == v for o, v in want.items()
                ),
                30,
                f"{node.name}: every origin's verdict",
            )
            # the fleet's counts reach /metrics at the node's next refresh
            wait_for(
                lambda node=node: 'edge_agent_origins{verdict="down"} 1.0' in self.metrics(node),
                10,
                f"{node.name}: edge_agent_origins in /metrics",
            )
            # an unknown id: counted apart from bad input
            assert node.get("/v1/origins/no-such-origin")[0] == 404
        # the https origin's owners report its certificate's expiry
        wait_for(
            lambda: any(
                "edge_agent_origin_tls_expiry_timestamp_seconds{" in self.metrics(a)
                for a in self.nodes
            ),
            15,
            "a TLS expiry series",
        )

    @staticmethod
    def metrics(node: AgentProcess) -> str:
        status, text = node.get("/metrics")
        assert status == 200, text
        return str(text)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
        self.silent.close()
        self.receiver.close()
        self.tls.close()
        self.origins.close()


def cluster(tmp: Path, nodes: int = 3) -> Iterator[Cluster]:
    """A brought-up Cluster for a fixture to yield; closed afterwards."""
    c = Cluster(tmp, nodes)
    try:
        c.bring_up()
        yield c
    finally:
        c.close()
