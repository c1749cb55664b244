"""The sandboxed process runner for ``kind: command`` tools.

One call runs one argv (never a shell) under bubblewrap, roughly::

    bwrap --unshare-user --unshare-pid --unshare-ipc --unshare-uts --unshare-cgroup-try
          --unshare-net --hostname sandbox --die-with-parent --new-session --cap-drop ALL
          --disable-userns --assert-userns-disabled
          --ro-bind /usr /usr --symlink usr/bin /bin ...   (system folders, read-only)
          --ro-bind-try /etc/ld.so.cache ... --ro-bind-try /etc/alternatives ...
          --proc /proc --dev /dev --size N --tmpfs /tmp --dir /tmp/work
          --ro-bind P P ... --bind P P ...                  (only the declared paths)
          --remount-ro /dev --remount-ro / --chdir /tmp/work
          --clearenv --setenv PATH ... --setenv HOME /tmp/work ... --json-status-fd 3
          -- /usr/bin/prlimit --as=... --cpu=... --fsize=... --nproc=... --nofile=... --core=0
          -- ARGV...

Decisions worth knowing before changing anything here:

* Limits are set by util-linux ``prlimit`` *inside* the sandbox, right before it executes the
  tool. ``preexec_fn`` is unsafe in the broker (it has gRPC threads), and ``prlimit`` *around*
  bwrap would also bind bwrap itself: RLIMIT_NPROC is checked against every process of the host
  uid (the broker's own threads included), so it would fail to start at all. Set inside the
  fresh user namespace, RLIMIT_NPROC counts only this sandbox's processes (the kernel keeps the
  count per user namespace and uid), so ``max_processes`` is per call.
* RLIMIT_NPROC is never enforced for host root, and a sandbox mapped to host root owns every
  root-owned file it can see. So when the broker runs as root, bwrap runs as ``SANDBOX_UID``
  (nobody), switched by util-linux ``setpriv`` (see ``_drop_root``). Paths bound into the
  sandbox must then be readable (and, for read_write, writable) by that uid, and every folder
  above them enterable: a checkout under /root (mode 0700) is not, and bwrap would only say
  "Permission denied", so ``_unreachable`` names the folder first. (Handing bwrap 0.8 an open
  descriptor instead, ``--ro-bind-fd``, fails the same way: it looks the path up again.)
* RLIMIT_AS rather than RLIMIT_DATA: DATA misses shared anonymous mappings (``mmap`` with
  MAP_SHARED), which a tool could use to take memory without limit; AS bounds every mapping.
  It also counts reservations never touched (glibc reserves 64 MiB per malloc arena of a
  threaded program), so the default of 256 MiB leaves room: measured here, python3 starts in
  14 MiB and pdftotext needs 24 MiB for a one-page PDF.
* tmpfs lives in host memory outside any rlimit, so /tmp has a size (``tmp_mb``), /dev is
  remounted read-only and / stays read-only.
* bwrap itself starts with an empty environment: ``--clearenv`` only cleans the tool's
  environment, while the sandbox's pid 1 is a fork of bwrap whose /proc/1/environ the tool can
  read. Started from the broker's environment it would hand over every secret in it.
* ``--json-status-fd`` tells a tool's exit code (reported once the tool ran) from bwrap failing
  to build the sandbox (no exit-code: SandboxUnavailable), without trusting stderr text.
* On timeout or cancellation the bwrap process group is killed; ``--die-with-parent`` then
  kills the sandbox's pid 1, and with it the kernel kills every process in the pid namespace.

No seccomp filter is loaded: the namespaces, the dropped capabilities and the disabled nested
user namespaces are the boundary. asyncio and OS exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from broker import errors

DEFAULT_BWRAP = "bwrap"
PRLIMIT = "/usr/bin/prlimit"
SANDBOX_UID = 65534  # nobody: used only when the broker runs as root (see above)
SANDBOX_GID = 65534  # nogroup
# Paths inside the sandbox: a fresh, size-capped tmpfs, never the host's /tmp.
SANDBOX_TMP = "/tmp"  # noqa: S108
WORK_DIR = SANDBOX_TMP + "/work"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_OPEN_FILES = 256
PROBE_TIMEOUT = 10.0
KILL_GRACE = 5.0  # after SIGKILL: how long the pipes may take to reach end of file
READ_CHUNK = 64 * 1024
MIB = 1024 * 1024

# Host folders the tool may need to run a program at all; each is bound read-only at the same
# path, or recreated as the same symlink (merged-/usr systems link /bin to usr/bin).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc holds configuration and sometimes secrets: only what dynamic linking and Debian's
# command alternatives need.
SYSTEM_ETC = ("/etc/ld.so.cache", "/etc/alternatives")
# Name resolution and TLS trust, only for tools that have the network.
NETWORK_ETC = (
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/services",
    "/etc/protocols",
    "/etc/ssl",
    "/etc/ca-certificates",
)
# Binding over these would undo the sandbox's own /proc and /dev.
RESERVED = ("/proc", "/dev")


@dataclass(frozen=True)
class SandboxSpec:
    """What one command tool may use: network, time, memory, processes, output and paths."""

    network: bool = False
    timeout: float = 10.0  # wall clock seconds
    cpu_seconds: int = 10  # RLIMIT_CPU per process; SIGKILL one second after the soft limit
    memory_mb: int = 256  # RLIMIT_AS per process
    max_file_mb: int = 16  # RLIMIT_FSIZE: the largest file the tool may write
    max_processes: int = 32  # RLIMIT_NPROC within this sandbox, its pid 1 and threads included
    max_stdout: int = MIB
    max_stderr: int = 64 * 1024
    tmp_mb: int = 64  # size of the tmpfs /tmp (the work folder is in it): host memory
    read_only: tuple[str, ...] = ()  # host paths bound read-only at the same path
    read_write: tuple[str, ...] = ()  # host paths bound writable at the same path
    env: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_only", tuple(self.read_only))
        object.__setattr__(self, "read_write", tuple(self.read_write))
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        if not 0 < self.timeout < float("inf"):
            raise ValueError(f"timeout must be a positive number of seconds, not {self.timeout}")
        for name in ("cpu_seconds", "memory_mb", "max_file_mb", "max_processes", "tmp_mb"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_stdout < 0 or self.max_stderr < 0:
            raise ValueError("max_stdout and max_stderr cannot be negative")
        for path in self.read_only + self.read_write:
            _check_bind_path(path)
        for name, value in self.env.items():
            if not name or "=" in name or "\0" in name or "\0" in value:
                raise ValueError(f"environment variable {name!r}: bad name or a NUL in its value")


@dataclass(frozen=True)
class SandboxResult:
    """How the command ended: its exit code (128 + N when signal N killed it) and its output,
    cut at the spec's caps (the flags say whether anything was cut)."""

    exit_code: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool


def _check_bind_path(path: str) -> None:
    if not os.path.isabs(path) or os.path.normpath(path) != path or path.startswith("//"):
        raise ValueError(f"sandbox path {path!r} must be absolute and normalised")
    if path == "/":
        raise ValueError("the host's root folder cannot be bound into the sandbox")
    if any(path == top or path.startswith(top + "/") for top in RESERVED):
        raise ValueError(f"sandbox path {path!r} would cover the sandbox's own /proc or /dev")


def sandbox_available(bwrap: str = DEFAULT_BWRAP) -> str | None:
    """None when bubblewrap can build the sandbox here, else what is missing and how to fix it.
    The probe runs a real sandbox once per bwrap path and is cached; it blocks, so call it at
    startup or off the event loop."""
    path = shutil.which(bwrap)
    if path is None:
        return (
            f"bubblewrap is not installed ({bwrap!r} not found): install it "
            "(Debian/Ubuntu: apt-get install bubblewrap) and restart the broker"
        )
    return _probe(path)


@functools.cache
def _probe(bwrap: str) -> str | None:
    if not os.access(PRLIMIT, os.X_OK):
        return f"{PRLIMIT} is missing: install util-linux (it sets the sandbox's limits)"
    try:
        probe = subprocess.run(
            [*_drop_root(), *build_command(["true"], SandboxSpec(), bwrap=bwrap)],
            capture_output=True,
            env={},
            cwd="/",
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"bubblewrap ({bwrap}) could not be started: {exc}"
    if probe.returncode == 0:
        return None
    detail = _bwrap_lines(probe.stderr) or f"exit status {probe.returncode}"
    return (
        f"bubblewrap cannot build the sandbox here ({detail}); it needs bubblewrap >= 0.8 and "
        "unprivileged user namespaces: sysctl user.max_user_namespaces > 0, on Debian "
        "kernel.unprivileged_userns_clone=1, on Ubuntu 23.10+ "
        "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap; "
        "in a container, allow unshare/clone of namespaces"
    )


def build_command(
    argv: Sequence[str], spec: SandboxSpec, *, bwrap: str, status_fd: int | None = None
) -> list[str]:
    """The full bwrap command line for one call (the module docstring explains each part)."""
    command = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",  # older kernels lack cgroup namespaces; the rest still holds
        *([] if spec.network else ["--unshare-net"]),
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",  # no controlling terminal: TIOCSTI cannot type into the broker's
        "--cap-drop",
        "ALL",
        "--disable-userns",  # nested user namespaces are a large kernel attack surface
        "--assert-userns-disabled",
        *_system_mounts(spec.network),
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--size",
        str(spec.tmp_mb * MIB),
        "--tmpfs",
        SANDBOX_TMP,
        "--dir",
        WORK_DIR,
        *_user_binds(spec),
        "--remount-ro",
        "/dev",
        "--remount-ro",
        "/",
        "--chdir",
        WORK_DIR,
        "--clearenv",
        *_environment(spec),
    ]
    if status_fd is not None:
        command += ["--json-status-fd", str(status_fd)]
    return [*command, "--", *_limits(spec), "--", *argv]


def _system_mounts(network: bool) -> list[str]:
    mounts: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            mounts += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            mounts += ["--ro-bind", path, path]
    for path in SYSTEM_ETC + (NETWORK_ETC if network else ()):
        mounts += ["--ro-bind-try", path, path]
    return mounts


def _user_binds(spec: SandboxSpec) -> list[str]:
    binds = [("--ro-bind", path) for path in spec.read_only]
    binds += [("--bind", path) for path in spec.read_write]
    # Parents first, so a bind inside another bound folder is not hidden by it.
    binds.sort(key=lambda bind: bind[1].count("/"))
    return [arg for flag, path in binds for arg in (flag, path, path)]


def _environment(spec: SandboxSpec) -> list[str]:
    env = {"PATH": DEFAULT_PATH, "HOME": WORK_DIR, "TMPDIR": SANDBOX_TMP, "LANG": "C.UTF-8"}
    env.update(spec.env)
    return [arg for name, value in env.items() for arg in ("--setenv", name, value)]


def _limits(spec: SandboxSpec) -> list[str]:
    return [
        PRLIMIT,
        f"--as={spec.memory_mb * MIB}",
        f"--cpu={spec.cpu_seconds}:{spec.cpu_seconds + 1}",
        f"--fsize={spec.max_file_mb * MIB}",
        f"--nproc={spec.max_processes}",
        f"--nofile={MAX_OPEN_FILES}",
        "--core=0",
    ]


def _drop_root() -> list[str]:
    """As root, bwrap is started through util-linux ``setpriv`` as SANDBOX_UID. Not through
    subprocess's ``user``/``group``: those make CPython fork() instead of vfork(), and a fork()
    in a process with gRPC threads runs gRPC's fork handlers (seen here: bwrap's child died with
    SIGSEGV now and then)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [setpriv, f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_GID}", "--clear-groups", "--"]


def _unreachable(spec: SandboxSpec) -> str | None:
    """As root, the first folder above a bound path that SANDBOX_UID (no groups) may not
    enter, said as an error with the fix; None when there is none or the broker is not root."""
    if os.geteuid() != 0:
        return None
    for path in (*spec.read_only, *spec.read_write):
        real = os.path.realpath(path)
        parts = real.split("/")[1:-1]
        for depth in range(len(parts) + 1):
            folder = "/" + "/".join(parts[:depth])
            try:
                info = os.stat(folder)
            except OSError:
                break  # a missing path: bwrap's own error says so
            if info.st_uid != SANDBOX_UID and not info.st_mode & stat.S_IXOTH:
                return (
                    f"the broker runs as root, so its sandboxes run as uid {SANDBOX_UID} "
                    f"(nobody), which cannot reach {path}: {folder} is mode "
                    f"{stat.S_IMODE(info.st_mode):04o}. Let others through it "
                    f"(chmod o+x {folder}) or keep the tool's files in another place"
                )
    return None


async def run_sandboxed(
    argv: Sequence[str],
    spec: SandboxSpec,
    *,
    stdin: bytes = b"",
    deadline: float | None = None,
    bwrap: str = DEFAULT_BWRAP,
) -> SandboxResult:
    """Run ``argv`` in a fresh sandbox and return how it ended; a non-zero exit is a result,
    not an error. ``deadline`` is a time.monotonic() value; the sooner of it and the spec's
    timeout stops the command. Raises SandboxUnavailable, UpstreamTimeout, InvalidArguments
    (a NUL byte in argv) or UpstreamUnavailable (the host could not start a process)."""
    if not argv:
        raise ValueError("a sandboxed command needs at least a program name")
    if any("\0" in item for item in argv):
        raise errors.InvalidArguments("a command argument contains a NUL byte")
    reason = await asyncio.to_thread(sandbox_available, bwrap)
    if reason is not None:
        raise errors.SandboxUnavailable(reason)
    limit = spec.timeout
    if deadline is not None:
        limit = min(limit, deadline - time.monotonic())
    if limit <= 0:
        raise errors.UpstreamTimeout("the caller's deadline passed before the command started")
    unreachable = _unreachable(spec)
    if unreachable is not None:
        raise errors.SandboxUnavailable(unreachable)
    bwrap_path = shutil.which(bwrap) or bwrap
    status_read, status_write = os.pipe()
    try:
        command = build_command(argv, spec, bwrap=bwrap_path, status_fd=status_write)
        try:
            process = await _spawn(command, status_write)
        finally:
            os.close(status_write)
        outcome = await _supervise(process, spec, stdin, limit)
        status = _read_all(status_read)
    finally:
        os.close(status_read)
    if outcome is None:
        raise errors.UpstreamTimeout(f"{argv[0]} did not finish within {limit:.3g}s; stopped")
    (stdout, stdout_cut), (stderr, stderr_cut) = outcome
    exit_code = _exit_code(status)
    if exit_code is None:
        detail = _bwrap_lines(stderr) or f"bubblewrap exited with {process.returncode}"
        raise errors.SandboxUnavailable(f"the sandbox could not start {argv[0]}: {detail}")
    return SandboxResult(exit_code, stdout, stderr, stdout_cut, stderr_cut)


async def _spawn(command: list[str], status_fd: int) -> asyncio.subprocess.Process:
    try:
        return await asyncio.create_subprocess_exec(
            *_drop_root(),
            *command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},  # see the module docstring: /proc/1/environ
            cwd="/",
            start_new_session=True,
            pass_fds=(status_fd,),
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise errors.SandboxUnavailable(f"bubblewrap could not be started: {exc}") from None
    except OSError as exc:
        raise errors.UpstreamUnavailable(
            f"the host could not start a sandboxed process ({exc.strerror}); try again later"
        ) from None


_Output = tuple[tuple[bytes, bool], tuple[bytes, bool]]  # (stdout, cut), (stderr, cut)


async def _supervise(
    process: asyncio.subprocess.Process, spec: SandboxSpec, stdin: bytes, limit: float
) -> _Output | None:
    """Feed stdin, read both pipes under their caps and wait; None when time ran out. However
    this ends (also by cancellation) nothing of the sandbox is left running."""
    assert process.stdin and process.stdout and process.stderr
    everything = asyncio.gather(
        _read_capped(process.stdout, spec.max_stdout),
        _read_capped(process.stderr, spec.max_stderr),
        _feed(process.stdin, stdin),
        process.wait(),
    )
    try:
        stdout, stderr, _, _ = await asyncio.wait_for(asyncio.shield(everything), limit)
    except TimeoutError:
        return None
    finally:
        if process.returncode is None:
            _kill(process)
        # Keep reading until the pipes close, so no transport is left paused and open.
        await asyncio.wait([everything], timeout=KILL_GRACE)
        if not everything.done():
            everything.cancel()
    return stdout, stderr


def _kill(process: asyncio.subprocess.Process) -> None:
    # bwrap leads its own process group; the sandbox (its own session) dies with it through
    # --die-with-parent and the pid namespace.
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(process.pid, signal.SIGKILL)


async def _read_capped(stream: asyncio.StreamReader, cap: int) -> tuple[bytes, bool]:
    # Past the cap the output is read and dropped: the tool does not block on a full pipe, and
    # memory stays bounded; the timeout bounds how long it may go on.
    chunks: list[bytes] = []
    kept = 0
    truncated = False
    while chunk := await stream.read(READ_CHUNK):
        room = cap - kept
        if room > 0:
            chunks.append(chunk[:room])
            kept += min(room, len(chunk))
        if len(chunk) > room:
            truncated = True
    return b"".join(chunks), truncated


async def _feed(pipe: asyncio.StreamWriter, data: bytes) -> None:
    try:
        if data:
            pipe.write(data)
            await pipe.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the tool exited or closed stdin without reading it all: its choice
    finally:
        pipe.close()


def _read_all(fd: int) -> bytes:
    # bwrap has exited, so what it wrote is in the pipe; never wait for more.
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _exit_code(status: bytes) -> int | None:
    """The tool's exit code from bwrap's JSON status documents; None when the tool never ran."""
    decoder = json.JSONDecoder()
    text = status.decode("utf-8", errors="replace")
    position = 0
    code: int | None = None
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position >= len(text):
            return code
        try:
            document, position = decoder.raw_decode(text, position)
        except ValueError:
            return code
        if isinstance(document, dict) and isinstance(document.get("exit-code"), int):
            code = document["exit-code"]


def _bwrap_lines(stderr: bytes) -> str:
    # Only bwrap's own lines: the rest of stderr (if any) is the tool's, not the broker's word.
    lines = stderr.decode("utf-8", errors="replace").splitlines()
    mine = [line.strip() for line in lines if line.startswith("bwrap: ")]
    return "; ".join(mine)[:300]
