"""`edge-agent self-update`: a new release of the agent's venv, with an automatic rollback.

For a Pi that no Ansible manages (docs/self-update.md is the runbook). The layout under
``/opt/edge-agent`` (``--home``):

    venv -> releases/0.2.0-3f9c0a1b2c4d     what the unit runs (ExecStart=…/venv/bin/edge-agent)
    previous -> releases/0.1.0-initial      what a rollback goes back to
    releases/<version>-<sha256 of the wheel, 12 hex>/   one venv per release; two are kept

The image and the Ansible role make ``venv`` a plain directory; the first self-update turns
it into ``releases/<version>-initial`` (an atomic exchange, ``renameat2(RENAME_EXCHANGE)``,
so ``venv`` names a working venv at every instant) and ``venv`` into the link.

The steps, in order; nothing live changes before step 4:

1. take ``self-update.lock`` (one update at a time), fetch the wheel (a path, or an http(s)
   URL), check it is an edge-agent wheel (and its ``--sha256``);
2. build ``releases/<id>`` beside the running one: a venv on the same Python, the running
   venv's dependencies copied in (so nothing else is downloaded; a release that needs a
   newer dependency brings its wheel with ``--find-links``), then ``pip install --no-index``
   of the wheel, ``pip check``, and the new ``edge-agent check-config`` on the node's config;
3. note what "healthy" means now: the members alive in the running agent's view, and the
   reasons it is already degraded for;
4. point ``venv`` at the new release (one ``rename`` of a symlink: atomic), ``previous`` at
   the old one, and restart (``systemctl restart edge-agent``, or ``--restart-command``);
5. wait up to ``--deadline`` seconds for the new agent: ``/v1/health`` answers from the
   new version, a new process, ``ok`` (or degraded only for reasons it had before), and
   the members alive before are alive again. Else flip back, restart, and check the
   previous release the same way.

Exit status: 0 updated (or already running that release), 1 not healthy in time and rolled
back (the previous release runs), 2 nothing changed (bad wheel, download, install or
config check, another update running), 3 rolled back but the previous release is not
healthy either: a person must look. The decisions (:func:`judge`, :func:`release_id`, the
layout's state) are pure and unit-tested; tests/test_selfupdate.py runs the whole thing
with real venvs, a real wheel and a real agent process.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOME = Path("/opt/edge-agent")
RESTART = "systemctl restart edge-agent"
DEADLINE = 120.0
KEEP = 2  # releases kept: the running one and the previous
MARKER = "edge-agent-release.json"  # written last: a release without it is incomplete
EXIT_OK, EXIT_ROLLED_BACK, EXIT_UNCHANGED, EXIT_BROKEN = 0, 1, 2, 3

_WHEEL = re.compile(r"edge_agent-(?P<version>[^-]+)-[^-]+-[^-]+-[^-]+\.whl")
# site-packages entries not carried over to a new release: the agent itself and the tools
# the new venv brings its own of
_NOT_SEEDED = re.compile(
    r"(agent|edge_agent-.*\.dist-info|pip|pip-.*\.dist-info|__pycache__)", re.IGNORECASE
)


class UpdateError(Exception):
    """Something stopped the update before the switch: nothing live was changed."""


# --- pure parts --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Baseline:
    """What "healthy" means for this node now, taken from the running agent before the update."""

    members: frozenset[str] = frozenset()  # alive in its view (itself included)
    reasons: frozenset[str] = frozenset()  # keys it is already degraded for ("leds", …)
    node: str = ""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One look at the agent after the restart: its /v1/health and the members alive."""

    health: dict[str, Any] | None = None
    members: frozenset[str] = frozenset()
    error: str | None = None


def reason_keys(reasons: Any) -> frozenset[str]:
    """ "leds: cannot use GPIO22 …" -> "leds"."""
    if not isinstance(reasons, list):
        return frozenset()
    return frozenset(str(r).split(":", 1)[0] for r in reasons)


def judge(s: Snapshot, version: str, base: Baseline, since: float) -> tuple[bool, str]:
    """Is the restarted agent the new ``version``, a process younger than ``since`` seconds,
    serving (ok, or degraded only for reasons it had before), and does it see the members
    that were alive before? (ok, what it lacks or what it is)."""
    h = s.health
    if h is None:
        return False, s.error or "no answer yet"
    if h.get("version") != version:
        return False, f"version {h.get('version')!r} answers, not {version!r} (not restarted yet?)"
    uptime = h.get("uptime_s")
    if not isinstance(uptime, int | float) or uptime > since + 1.0:
        return False, f"an agent up for {uptime} s answers: not the one just started"
    status = h.get("status")
    if status not in ("ok", "degraded"):
        return False, f"status {status} ({'; '.join(map(str, h.get('reasons') or [])) or '-'})"
    new = reason_keys(h.get("reasons")) - base.reasons
    if status == "degraded" and new:
        return False, f"degraded, for reasons it did not have before: {', '.join(sorted(new))}"
    missing = base.members - s.members
    if missing:
        return False, f"members alive before, not (yet) alive now: {', '.join(sorted(missing))}"
    seen = len(s.members) if s.members else 1
    return True, f"{version} {status}, {seen} member{'s' if seen != 1 else ''} alive"


def wheel_version(name: str) -> str:
    """The version in an edge-agent wheel's file name (UpdateError for another file)."""
    m = _WHEEL.fullmatch(name)
    if m is None:
        raise UpdateError(f"{name}: not an edge-agent wheel (edge_agent-VERSION-*.whl)")
    return m.group("version")


def release_id(version: str, sha256: str) -> str:
    """The release directory's name: the version, and which build of it."""
    return f"{version}-{sha256[:12]}"


# --- the layout on disk -------------------------------------------------------------------------


@dataclass
class Layout:
    """``home``'s venv link, previous link and releases (see the module docstring)."""

    home: Path = HOME

    @property
    def venv(self) -> Path:
        return self.home / "venv"

    @property
    def previous(self) -> Path:
        return self.home / "previous"

    @property
    def releases(self) -> Path:
        return self.home / "releases"

    def current(self) -> Path | None:
        """The release directory ``venv`` runs (the directory itself before the first update)."""
        if self.venv.is_symlink():
            return self.venv.resolve()
        return self.venv if self.venv.is_dir() else None

    def previous_release(self) -> Path | None:
        return self.previous.resolve() if self.previous.is_symlink() else None

    def point(self, link: Path, target: Path) -> None:
        """Make ``link`` a relative symlink to ``target`` atomically (rename over the old one)."""
        tmp = link.with_name(f".{link.name}.new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.path.relpath(target, link.parent))
        os.replace(tmp, link)
        fsync_dir(link.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` survive a power cut (SD cards lose power)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically: renameat2(RENAME_EXCHANGE) (Linux 3.15+, ext4, tmpfs)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"renameat2(RENAME_EXCHANGE) {a} <-> {b}: {os.strerror(e)}")


def rewrite_shebangs(venv: Path, old: Path, new: Path) -> int:
    """Point the scripts of a venv moved from ``old`` to ``new`` at its own Python again."""
    changed = 0
    old_b, new_b = b"#!" + os.fsencode(old) + b"/", b"#!" + os.fsencode(new) + b"/"
    for p in (venv / "bin").iterdir():
        if p.is_symlink() or not p.is_file():
            continue
        data = p.read_bytes()
        if data.startswith(old_b):
            p.write_bytes(new_b + data[len(old_b) :])
            changed += 1
    for name in ("activate", "activate.csh", "activate.fish"):  # VIRTUAL_ENV=… lines
        p = venv / "bin" / name
        if p.is_file():
            p.write_text(p.read_text().replace(str(old), str(new)))
    return changed


# --- the steps ---------------------------------------------------------------------------------


@dataclass
class Options:
    source: str  # a wheel's path or http(s) URL
    home: Path = HOME
    deadline: float = DEADLINE
    restart: Callable[[], None] | None = None  # None: run restart_command
    restart_command: str = RESTART
    find_links: list[str] = field(default_factory=list)
    sha256: str | None = None
    config: Path | None = None  # checked with the new release's check-config when it exists
    force: bool = False  # rebuild a release that is built already (never the running one)
    python: str | None = None  # the interpreter for new venvs (default: the running venv's)


@dataclass
class Outcome:
    code: int
    message: str
    release: str | None = None
    previous: str | None = None
    log: list[str] = field(default_factory=list)

    def as_json(self) -> str:
        return json.dumps(
            {
                "code": self.code,
                "message": self.message,
                "release": self.release,
                "previous": self.previous,
                "log": self.log,
            }
        )


class Updater:
    """Runs the steps. ``probe`` looks at the agent (tests and the CLI pass one that asks the
    agent's API); ``say`` reports progress (a line each)."""

    def __init__(
        self,
        opts: Options,
        probe: Callable[[], Snapshot],
        say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.o = opts
        self.layout = Layout(opts.home)
        self.probe = probe
        self._say = say
        self.clock = clock
        self.log: list[str] = []

    def say(self, line: str) -> None:
        self.log.append(line)
        self._say(line)

    def outcome(self, code: int, message: str, **kw: Any) -> Outcome:
        self.say(message)
        return Outcome(code, message, log=self.log, **kw)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.o.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.o.home / "self-update.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UpdateError(
                    f"another self-update is running ({self.o.home / 'self-update.lock'})"
                ) from None
            yield
        finally:
            os.close(fd)

    def run(self) -> Outcome:
        try:
            with self.locked():
                return self._run()
        except UpdateError as e:
            return self.outcome(EXIT_UNCHANGED, f"self-update: {e}; nothing was changed")

    def rollback(self) -> Outcome:
        """Go back to ``previous`` by hand (``self-update --rollback``)."""
        try:
            with self.locked():
                cur, prev = self.layout.current(), self.layout.previous_release()
                if prev is None or not (prev / MARKER).exists() or cur is None:
                    raise UpdateError(f"no previous release under {self.layout.previous}")
                version = json.loads((prev / MARKER).read_text())["version"]
                base = self.baseline()
                self.switch(prev, cur)
                ok, why = self.restart_and_wait(version, base)
                if ok:
                    return self.outcome(
                        EXIT_OK, f"rolled back to {prev.name}: {why}", release=prev.name
                    )
                return self.outcome(
                    EXIT_BROKEN, f"rolled back to {prev.name}, but it is not healthy: {why}"
                )
        except UpdateError as e:
            return self.outcome(EXIT_UNCHANGED, f"self-update: {e}; nothing was changed")

    def _run(self) -> Outcome:
        lay = self.layout
        self.adopt_leftover()
        current = lay.current()
        if current is None:
            raise UpdateError(f"{lay.venv} is not a venv: install the agent first")
        wheel, tmpdir = self.fetch()
        try:
            version = wheel_version(wheel.name)
            digest = self.check_wheel(wheel, version)
            rid = release_id(version, digest)
            target = lay.releases / rid
            if current == target:
                return self.outcome(EXIT_OK, f"already running {rid}: nothing to do", release=rid)
            if self.o.force or not (target / MARKER).exists():
                self.build(target, current, wheel, version, digest)
            else:
                self.say(f"{rid} is already built in {target}: reusing it")
        finally:
            if tmpdir is not None:
                shutil.rmtree(tmpdir, ignore_errors=True)
        base = self.baseline()
        before_previous = lay.previous_release()
        old = self.switch(target, current)
        ok, why = self.restart_and_wait(version, base)
        if ok:
            self.prune(keep={target, old})
            return self.outcome(EXIT_OK, f"updated to {rid}: {why}", release=rid, previous=old.name)
        self.say(f"{rid} did not become healthy within {self.o.deadline:g} s: {why}")
        self.say(f"rolling back to {old.name}")
        old_version = json.loads((old / MARKER).read_text())["version"]
        self.switch(old, target, previous=None)
        if before_previous is not None and (before_previous / MARKER).exists():
            lay.point(lay.previous, before_previous)  # as it was before this update
        ok, back = self.restart_and_wait(old_version, base)
        shutil.rmtree(target, ignore_errors=True)
        if ok:
            return self.outcome(
                EXIT_ROLLED_BACK,
                f"rolled back to {old.name} ({back}); {rid} was removed. Why it failed: {why}",
                release=old.name,
            )
        return self.outcome(
            EXIT_BROKEN,
            f"rolled back to {old.name}, but it is not healthy either: {back}. "
            "Look at `journalctl -u edge-agent`",
            release=old.name,
        )

    # -- fetching and checking the wheel --

    def fetch(self) -> tuple[Path, Path | None]:
        """The wheel as a local file (downloaded into a temporary directory for a URL)."""
        src = self.o.source
        if src.startswith(("http://", "https://")):
            name = Path(urllib.request.url2pathname(src.split("?", 1)[0].rsplit("/", 1)[-1]))
            wheel_version(name.name)
            self.o.home.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=self.o.home))
            dest = tmp / name.name
            self.say(f"downloading {src}")
            try:
                with urllib.request.urlopen(src, timeout=60) as r, open(dest, "wb") as f:
                    shutil.copyfileobj(r, f)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise UpdateError(f"cannot download {src}: {e}") from None
            return dest, tmp
        if src.startswith("file://"):
            src = urllib.request.url2pathname(src[len("file://") :])
        p = Path(src)
        if not p.is_file():
            raise UpdateError(f"{src}: no such file (give a wheel's path or an http(s) URL)")
        return p.resolve(), None

    def check_wheel(self, wheel: Path, version: str) -> str:
        """Its sha256 (checked against --sha256), after checking it is the agent's wheel."""
        h = hashlib.sha256()
        with open(wheel, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        if self.o.sha256 and digest != self.o.sha256.lower():
            raise UpdateError(f"{wheel.name}: sha256 {digest}, not the {self.o.sha256} expected")
        try:
            with zipfile.ZipFile(wheel) as z:
                meta = z.read(f"edge_agent-{version}.dist-info/METADATA").decode()
                bad = z.testzip()
        except (zipfile.BadZipFile, KeyError, OSError) as e:
            raise UpdateError(f"{wheel.name}: not a readable edge-agent wheel ({e})") from None
        if bad is not None:
            raise UpdateError(f"{wheel.name}: {bad} is corrupt")
        if not re.search(r"^Name: edge-agent$", meta, re.MULTILINE):
            raise UpdateError(f"{wheel.name}: its METADATA does not name edge-agent")
        self.say(f"wheel {wheel.name} (sha256 {digest[:12]}…)")
        return digest

    # -- building the new release --

    def python_for(self, current: Path) -> str:
        """The interpreter new venvs are made with: the running venv's base Python."""
        if self.o.python:
            return self.o.python
        cfg = _pyvenv(current)
        for candidate in (cfg.get("executable"), Path(cfg.get("home", "")) / "python3"):
            if candidate and Path(candidate).exists():
                return str(candidate)
        return sys.executable

    def build(self, target: Path, current: Path, wheel: Path, version: str, digest: str) -> None:
        """A complete venv at ``target`` (removed again if anything fails)."""
        if target.exists():
            shutil.rmtree(target)
        self.layout.releases.mkdir(parents=True, exist_ok=True)
        python = self.python_for(current)
        system_site = _pyvenv(current).get("include-system-site-packages") == "true"
        t0 = self.clock()
        try:
            self.say(
                f"building {target} ({python}{', system site packages' if system_site else ''})"
            )
            _run(
                [
                    python,
                    "-m",
                    "venv",
                    *(["--system-site-packages"] if system_site else []),
                    str(target),
                ]
            )
            seeded = self.seed(current, target)
            self.say(f"carried over {seeded} installed dependencies from {current.name}")
            links = [str(wheel.parent), *self.o.find_links]
            pip = [str(target / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
            _run(
                [
                    *pip,
                    "install",
                    "--quiet",
                    "--no-index",
                    "--no-cache-dir",
                    *(a for link in links for a in ("--find-links", link)),
                    str(wheel),
                ]
            )
            _run([*pip, "check"])
            got = _run([str(target / "bin" / "edge-agent"), "--version"]).strip()
            if got != f"edge-agent {version}":
                raise UpdateError(f"the new venv says {got!r}, not edge-agent {version}")
            config = self.o.config
            if config is not None and config.exists():
                _run([str(target / "bin" / "edge-agent"), "check-config", str(config)])
                self.say(f"the new release accepts {config}")
            (target / MARKER).write_text(
                json.dumps(
                    {
                        "version": version,
                        "sha256": digest,
                        "wheel": wheel.name,
                        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }
                )
            )
            fsync_dir(target)
        except (UpdateError, OSError, subprocess.CalledProcessError) as e:
            shutil.rmtree(target, ignore_errors=True)
            if isinstance(e, subprocess.CalledProcessError):
                out = (e.stderr or e.stdout or "").strip().splitlines()[-6:]
                cmd = " ".join(shlex.quote(str(a)) for a in e.cmd[:4])
                raise UpdateError(f"{cmd} … failed: {' / '.join(out) or e}") from None
            raise UpdateError(str(e)) from None
        self.say(f"built {target.name} in {self.clock() - t0:.1f} s")

    def seed(self, current: Path, target: Path) -> int:
        """Copy the running venv's installed packages (not the agent, not pip) into the new
        one, so a release with the same dependencies installs offline and identically."""
        src, dst = _site_packages(current), _site_packages(target)
        n = 0
        for entry in sorted(src.iterdir()):
            if _NOT_SEEDED.fullmatch(entry.name) or (dst / entry.name).exists():
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, dst / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, dst / entry.name, follow_symlinks=False)
            n += entry.name.endswith(".dist-info")
        return n

    # -- switching --

    def adopt_leftover(self) -> None:
        """A first update cut off between its exchange and its rename leaves the old venv
        at ``.venv.switch``: give it its release name now."""
        left = self.o.home / ".venv.switch"
        if left.is_dir() and not left.is_symlink():
            self.adopt(left)

    def adopt(self, old_dir: Path) -> Path:
        """Move the image's or Ansible's venv directory to ``releases/<version>-initial``."""
        version = _installed_version(old_dir) or "unknown"
        dest = self.layout.releases / f"{version}-initial"
        if dest.exists():
            shutil.rmtree(dest)
        self.layout.releases.mkdir(parents=True, exist_ok=True)
        os.rename(old_dir, dest)
        n = rewrite_shebangs(dest, self.layout.venv, dest)
        (dest / MARKER).write_text(json.dumps({"version": version, "adopted": True}))
        self.say(f"kept the previous venv as {dest} ({n} scripts re-pointed)")
        return dest

    def switch(self, target: Path, current: Path, previous: bool | None = True) -> Path:
        """Make ``venv`` run ``target``; return where the old release now is. The link is
        replaced in one rename; a plain venv directory is exchanged with the link first."""
        lay = self.layout
        if lay.venv.is_symlink():
            lay.point(lay.venv, target)
            old = current
        else:
            tmp = self.o.home / ".venv.switch"
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            tmp.symlink_to(os.path.relpath(target, self.o.home))
            try:
                exchange(tmp, lay.venv)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
                    raise
                # no RENAME_EXCHANGE here: two renames, with a moment without a venv
                self.say(f"no atomic exchange on this file system ({e.strerror}): two renames")
                tmp.unlink()
                os.rename(lay.venv, tmp)
                lay.point(lay.venv, target)
            fsync_dir(self.o.home)
            old = self.adopt(tmp)
        if previous is True:
            lay.point(lay.previous, old)
        elif previous is None:
            with contextlib.suppress(FileNotFoundError):
                lay.previous.unlink()
        self.say(f"{lay.venv} -> {target.name}")
        return old

    def prune(self, keep: set[Path]) -> None:
        """Remove releases other than ``keep`` (SD cards are small)."""
        for d in sorted(self.layout.releases.iterdir()):
            if d not in keep and d.is_dir() and not d.name.startswith("."):
                shutil.rmtree(d, ignore_errors=True)
                self.say(f"removed the old release {d.name}")

    # -- restarting and judging --

    def baseline(self) -> Baseline:
        s = self.probe()
        if s.health is None:
            self.say(
                f"the running agent does not answer ({s.error}): the new one need only be "
                "healthy by itself"
            )
            return Baseline()
        base = Baseline(s.members, reason_keys(s.health.get("reasons")), str(s.health.get("node")))
        self.say(
            f"before: {s.health.get('version')} {s.health.get('status')}, "
            f"{len(s.members)} members alive ({', '.join(sorted(s.members)) or '-'})"
        )
        return base

    def restart_and_wait(self, version: str, base: Baseline) -> tuple[bool, str]:
        t0 = self.clock()
        end = t0 + self.o.deadline
        try:
            if self.o.restart is not None:
                self.o.restart()
            else:
                self.say(f"restarting: {self.o.restart_command}")
                subprocess.run(
                    shlex.split(self.o.restart_command),
                    check=True,
                    capture_output=True,
                    text=True,
                    timeout=self.o.deadline,
                )
        except subprocess.CalledProcessError as e:
            self.say(f"the restart failed: {(e.stderr or e.stdout or '').strip()[:300]}")
        except (OSError, subprocess.TimeoutExpired) as e:
            self.say(f"the restart failed: {e}")
        why = "no answer yet"
        while True:
            ok, why = judge(self.probe(), version, base, self.clock() - t0)
            if ok:
                self.say(f"healthy after {self.clock() - t0:.1f} s: {why}")
                return True, why
            if self.clock() >= end:
                return False, why
            time.sleep(0.5)  # a poll interval, not a synchronisation: judge() decides


def _run(cmd: list[str]) -> str:
    """Run a command of the new venv: without the caller's PYTHONPATH/PYTHONHOME, which would
    make it import something other than what it installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout


def _pyvenv(venv: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            k, sep, v = line.partition("=")
            if sep:
                out[k.strip()] = v.strip()
    return out


def _site_packages(venv: Path) -> Path:
    found = sorted((venv / "lib").glob("python3*/site-packages"))
    if not found:
        raise UpdateError(f"{venv}: no lib/python3*/site-packages")
    return found[-1]


def _installed_version(venv: Path) -> str | None:
    with contextlib.suppress(UpdateError, OSError):
        for d in _site_packages(venv).glob("edge_agent-*.dist-info"):
            return d.name[len("edge_agent-") : -len(".dist-info")]
    return None
