"""Talking to systemd: readiness and status (sd_notify), the watchdog, and the journal.

systemd-python is the product's way to talk to systemd: ``systemd.daemon.notify`` for
READY/STATUS/WATCHDOG/STOPPING and ``systemd.journal.JournalHandler`` for structured log
entries. Every install on a machine with libsystemd has it (the image, the Ansible role,
scripts/bootstrap.sh; CI fails without it). The FALLBACKs below exist only for machines
without libsystemd (a laptop, macOS), where the agent still runs in the foreground.

The watchdog pings are scheduled *on the event loop* (:func:`run_watchdog`): if the loop
stalls (a blocking call, a busy loop), the pings stop and systemd restarts the agent,
which is the point. A ping from a thread would keep a wedged agent alive.

:func:`setup_logging` sends log records to the journal with structured fields when the
agent runs under systemd, and to stderr otherwise. docs/systemd.md explains the choices.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TextIO

# By name: the repository's systemd/ folder (the unit file) would shadow the package for mypy.
_daemon: Any
_journal: Any
try:
    _daemon = importlib.import_module("systemd.daemon")
    _journal = importlib.import_module("systemd.journal")
except ImportError:  # FALLBACK: no libsystemd here (a laptop, macOS); see the module doc
    _daemon = _journal = None

log = logging.getLogger(__name__)

SYSLOG_IDENTIFIER = "edge-agent"
#: journald's native socket; the journal handler is used only when it exists.
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")

#: What sends one sd_notify message: ``"KEY=value\nKEY=value"`` in, True if it was sent,
#: False when ``$NOTIFY_SOCKET`` is unset; OSError when it could not be sent.
NotifyFunction = Callable[[str], bool]


# --- sd_notify -----------------------------------------------------------------------------


def fallback_notify(state: str) -> bool:
    """FALLBACK for machines without libsystemd: what sd_notify(3) does, minus credentials.

    One datagram to the AF_UNIX socket named by ``$NOTIFY_SOCKET`` (``@name`` is an
    abstract socket); False when the variable is unset. Used only when systemd-python
    cannot be imported.
    """
    name = os.environ.get("NOTIFY_SOCKET")
    if not name:
        return False
    address: str | bytes = b"\0" + name[1:].encode() if name.startswith("@") else name
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # not inherited (PEP 446)
        sock.sendto(state.encode(), address)
    return True


def notify_function() -> NotifyFunction:
    """``systemd.daemon.notify`` when systemd-python is installed, else the fallback."""
    if _daemon is not None:
        notify: NotifyFunction = _daemon.notify
        return notify
    return fallback_notify


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET``; does nothing when it is unset.

    Like ``sd_notify(3)``, the socket is read from the process environment at each send.
    Send errors are logged once and otherwise ignored: telling systemd how we are must
    never be the reason the agent stops.
    """

    def __init__(self, notify: NotifyFunction | None = None) -> None:
        """``notify``: what sends a message; by default :func:`notify_function`'s choice."""
        self.notify = notify_function() if notify is None else notify
        self._status: str | None = None
        self._warned = False
        if self.enabled and self.notify is fallback_notify and notify is None:
            log.warning(
                "systemd-python is not installed: notifying systemd with edge-agent's "
                "fallback (install edge-agent[systemd]; docs/systemd.md)"
            )

    @classmethod
    def from_env(cls) -> Notifier:
        """A notifier for ``$NOTIFY_SOCKET`` (a no-op one when it is unset or empty)."""
        return cls()

    @property
    def enabled(self) -> bool:
        """True when there is a socket to notify (we run as a Type=notify service)."""
        return bool(os.environ.get("NOTIFY_SOCKET"))

    def send(self, *fields: str) -> bool:
        """Send one message of ``KEY=value`` fields; True if it was delivered."""
        if not self.enabled:
            return False
        try:
            return bool(self.notify("\n".join(fields)))
        except OSError as e:
            if not self._warned:
                self._warned = True
                log.warning("cannot notify systemd at %r: %s", os.environ.get("NOTIFY_SOCKET"), e)
            return False

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) is complete: systemd moves the unit to "active"."""
        fields = ["READY=1"]
        if status is not None:
            fields.append(f"STATUS={status}")
            self._status = status
        return self.send(*fields)

    def status(self, text: str) -> bool:
        """Set the one-line status ``systemctl status`` shows; sent only when it changes."""
        if text == self._status:
            return False
        sent = self.send(f"STATUS={text}")
        self._status = text if sent else None  # not delivered: send the next one anyway
        return sent

    def reloading(self) -> bool:
        """A reload has begun; call :meth:`ready` when it is done.

        MONOTONIC_USEC is what systemd >= 253 (Type=notify-reload) requires; 252 ignores it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun, so systemd does not read the exit as a crash mid-start."""
        fields = ["STOPPING=1"]
        if status is not None:
            fields.append(f"STATUS={status}")
            self._status = status
        return self.send(*fields)

    def watchdog(self) -> bool:
        """One keep-alive ping (``WATCHDOG=1``)."""
        return self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more time to start or stop (a long log recovery on a slow SD card)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={round(seconds * 1_000_000)}")


# --- the watchdog --------------------------------------------------------------------------


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between pings: half of ``$WATCHDOG_USEC``; None when the watchdog is off.

    Like sd_watchdog_enabled(3): ``$WATCHDOG_PID``, when set, must be our pid (the
    variables may have been inherited from a parent that is the real service).
    """
    env = os.environ if env is None else env
    usec_s = env.get("WATCHDOG_USEC", "")
    if not usec_s.isdigit() or int(usec_s) == 0:
        return None
    pid_s = env.get("WATCHDOG_PID", "")
    if pid_s and (not pid_s.isdigit() or int(pid_s) != (os.getpid() if pid is None else pid)):
        return None
    return int(usec_s) / 2 / 1_000_000


async def run_watchdog(notifier: Notifier, interval: float | None) -> None:
    """Ping systemd's watchdog every ``interval`` seconds from the event loop, until cancelled.

    Returns at once when ``interval`` is None (no watchdog), so a supervisor should not
    restart it when it ends. The first ping goes out immediately.
    """
    if interval is None or not notifier.enabled:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


class Watchdog:
    """Owns the :func:`run_watchdog` task for a runtime: start it, stop it.

    ``interval`` is None when systemd did not ask for pings (or asked another pid), and
    then start() and stop() do nothing.
    """

    def __init__(self, notifier: Notifier, interval: float | None) -> None:
        self.notifier = notifier
        self.interval = interval if notifier.enabled else None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, notifier: Notifier, env: Mapping[str, str] | None = None) -> Watchdog:
        """The watchdog systemd asked for through ``$WATCHDOG_USEC``/``$WATCHDOG_PID``."""
        return cls(notifier, watchdog_interval(env))

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start pinging; call from the running event loop. A no-op when already running."""
        if self.interval is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                run_watchdog(self.notifier, self.interval), name="systemd-watchdog"
            )

    def stop(self) -> None:
        """Stop pinging (the task is cancelled; nothing to await)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()


# --- logging -------------------------------------------------------------------------------

#: Journal field names: what journald accepts (uppercase, digits, '_', not leading '_').
_FIELD_RE = re.compile(r"^[A-Z0-9][A-Z0-9_]{0,63}$")
#: The "<N>" prefix journald reads from stream lines (syslog priorities).
_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}
_OURS = "_edge_agent_handler"

LogDestination = Literal["journal", "journal-stream", "stderr"]


def syslog_priority(levelno: int) -> int:
    """Map a logging level to a syslog priority (debug 7 … critical 2)."""
    for level in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= level:
            return _PRIORITY[level]
    return 7


def journal_fields(record: logging.LogRecord) -> dict[str, str]:
    """The record's structured fields: every UPPERCASE key given in ``extra={...}``."""
    return {k: str(v) for k, v in record.__dict__.items() if _FIELD_RE.match(k)}


def _stream_is_journal(stream: TextIO, env: Mapping[str, str]) -> bool:
    """True when ``stream`` is the journal's stream socket (``$JOURNAL_STREAM`` is dev:ino)."""
    expected = env.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # closed, or not a real file (pytest)
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def log_destination(
    env: Mapping[str, str] | None = None, stream: TextIO | None = None
) -> LogDestination:
    """Where :func:`setup_logging` sends records, and why.

    - ``journal``: under systemd (stderr is the journal stream, or ``$INVOCATION_ID`` is
      set), with systemd-python installed and journald's socket present: native journal
      entries with structured fields.
    - ``journal-stream`` (FALLBACK): stderr is the journal but systemd-python is missing:
      plain lines with a ``<N>`` priority prefix and no timestamp (journald adds its own).
    - ``stderr``: anywhere else: timestamped lines.
    """
    env = os.environ if env is None else env
    stream = sys.stderr if stream is None else stream
    to_journal = _stream_is_journal(stream, env)
    under_systemd = to_journal or bool(env.get("INVOCATION_ID"))
    if under_systemd and _journal is not None and JOURNAL_SOCKET.exists():
        return "journal"
    return "journal-stream" if to_journal else "stderr"


class ConsoleFormatter(logging.Formatter):
    """``2024-05-01 12:00:00,123 INFO agent.checks: origin down ORIGIN=shop``.

    Structured fields are appended as ``KEY=value`` so they are not lost off the journal.
    With ``journal=True`` each line instead starts with journald's ``<N>`` priority and
    has no timestamp (every line, so a traceback keeps its priority).
    """

    def __init__(self, journal: bool = False) -> None:
        fmt = (
            "%(name)s: %(message)s"
            if journal
            else "%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        super().__init__(fmt)
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = journal_fields(record)
        if fields:
            head, sep, tail = text.partition("\n")
            extra = " ".join(f"{k}={v}" for k, v in sorted(fields.items()))
            text = f"{head} {extra}{sep}{tail}"
        if self.journal:
            prefix = f"<{syslog_priority(record.levelno)}>"
            text = "\n".join(prefix + line for line in text.split("\n"))
        return text


def _journal_handler() -> logging.Handler:
    """systemd-python's JournalHandler, as its documentation says to use it.

    ``SYSLOG_IDENTIFIER`` is a constant field given to the constructor; a record's own
    fields come through ``extra={"ORIGIN": ...}`` (UPPERCASE journal field names, not one
    the handler sets itself: MESSAGE, PRIORITY, LOGGER, THREAD_NAME, PROCESS_NAME, CODE_*).
    The handler also passes the record's lowercase attributes, which journald drops as
    invalid field names.
    """
    if _journal is None:
        raise RuntimeError("systemd-python is not installed")
    handler: logging.Handler = _journal.JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler


def setup_logging(
    level: str,
    *,
    env: Mapping[str, str] | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Configure the root logger for ``level`` ("debug", "info", …); returns the handler.

    Calling it again (a reload that changed ``[log] level``) replaces the handler this
    function installed before and leaves any others alone.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    stream = sys.stderr if stream is None else stream
    dest = log_destination(env, stream)
    handler: logging.Handler
    if dest == "journal":
        handler = _journal_handler()
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(ConsoleFormatter(journal=dest == "journal-stream"))
    setattr(handler, _OURS, dest)
    root = logging.getLogger()
    for old in [h for h in root.handlers if hasattr(h, _OURS)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    return handler
