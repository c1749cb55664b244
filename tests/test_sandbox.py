"""The sandboxed runner, through real bubblewrap sandboxes running real programs.

The sandbox sees the host's /usr read-only, so the programs here are the system's
(/usr/bin/python3, sh, pdftotext), never the venv's. Host folders handed to a sandbox live
under /tmp with open permissions: when the tests run as root the sandbox runs as nobody, and
only the sandbox, not a file mode, should be what keeps it out of anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest

from broker import errors
from broker.sandbox import (
    SANDBOX_UID,
    SandboxResult,
    SandboxSpec,
    build_command,
    run_sandboxed,
    sandbox_available,
)
from tests.conftest import unavailable

# Every test here runs real sandboxes: without bubblewrap they skip, saying so (in CI they fail).
pytestmark = pytest.mark.usefixtures("sandbox")
PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def python(script: str, spec: SandboxSpec, *args: str, stdin: bytes = b"") -> SandboxResult:
    return run(run_sandboxed([PYTHON, "-I", "-c", script, *args], spec, stdin=stdin))


def json_out(result: SandboxResult) -> Any:
    assert result.exit_code == 0, result.stderr.decode()
    return json.loads(result.stdout)


@pytest.fixture
def host_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sandbox-test-", dir="/tmp"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def processes_with(marker: str) -> list[int]:
    """Host pids whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            if marker.encode() in cmdline:
                found.append(int(entry.name))
    return found


def assert_none_survive(marker: str) -> None:
    # The kernel tears the pid namespace down right after bwrap dies; allow it a moment.
    give_up = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < give_up:
        time.sleep(0.05)  # bounded by give_up
    assert processes_with(marker) == []


async def wait_for_file(path: Path, within: float = 10) -> None:
    give_up = time.monotonic() + within
    while not await asyncio.to_thread(path.exists):
        assert time.monotonic() < give_up, f"{path} never appeared"
        await asyncio.sleep(0.02)  # polling; bounded by give_up


def test_bubblewrap_works_on_this_machine() -> None:
    assert sandbox_available() is None


def test_a_command_returns_its_stdout_and_exit_code() -> None:
    result = run(run_sandboxed(["printf", "%s|", "hello", "world"], SandboxSpec()))

    assert result == SandboxResult(0, b"hello|world|", b"", False, False)


def test_a_non_zero_exit_is_a_result_not_an_error() -> None:
    result = run(run_sandboxed(["sh", "-c", "echo oops >&2; exit 3"], SandboxSpec()))

    assert (result.exit_code, result.stdout, result.stderr) == (3, b"", b"oops\n")


def test_a_missing_program_is_exit_127() -> None:
    result = run(run_sandboxed(["no-such-program"], SandboxSpec()))

    assert result.exit_code == 127
    assert b"no-such-program" in result.stderr


def test_stdin_json_reaches_the_process() -> None:
    script = "import json, sys; args = json.load(sys.stdin); print(json.dumps(args['n'] * 2))"

    result = python(script, SandboxSpec(), stdin=json.dumps({"n": 21}).encode())

    assert json_out(result) == 42


def test_each_argv_item_arrives_whole_and_no_shell_reads_it(host_dir: Path) -> None:
    tricky = [
        "two words",
        f"$(touch {host_dir}/substituted)",
        f"; touch {host_dir}/chained",
        f"`touch {host_dir}/backticks`",
        "*",
        "'\"\\",
        "--help",
        "",
        "line\nbreak",
        "ü €",
        "{path}",
        "a|b&&c>d",
    ]
    script = "import json, sys; print(json.dumps(sys.argv[1:]))"

    result = python(script, SandboxSpec(read_write=(str(host_dir),)), *tricky)

    assert json_out(result) == tricky
    assert list(host_dir.iterdir()) == []


def test_a_nul_byte_in_argv_is_refused() -> None:
    with pytest.raises(errors.InvalidArguments, match="NUL"):
        run(run_sandboxed(["echo", "a\0b"], SandboxSpec()))


def test_only_the_declared_environment_is_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"hunter2-{uuid.uuid4()}"
    monkeypatch.setenv("TOOLBROKER_TEST_SECRET", secret)
    # Every process's initial environment too: pid 1 is a fork of bwrap, so bwrap's own
    # environment would show in /proc/1/environ.
    script = """if True:
        import glob, json, os
        seen = {}
        for path in glob.glob("/proc/[0-9]*/environ"):
            try:
                seen[path] = open(path, "rb").read().decode("utf-8", "replace")
            except OSError as exc:
                seen[path] = type(exc).__name__
        print(json.dumps({"environ": dict(os.environ), "proc": seen}))
    """

    result = python(script, SandboxSpec(env={"GREETING": "hello"}))

    assert secret.encode() not in result.stdout
    seen = json_out(result)
    assert seen["environ"] == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp/work",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PWD": "/tmp/work",  # bwrap's --chdir sets it
        "GREETING": "hello",
    }
    assert "/proc/1/environ" in seen["proc"]


PROBE_FILES = """if True:
    import json, os, sys
    found = {}
    for path in sys.argv[1:]:
        try:
            with open(path) as file:
                found[path] = file.read()
        except OSError as exc:
            found[path] = type(exc).__name__
    print(json.dumps({"files": found, "root": sorted(os.listdir("/"))}))
"""


def test_host_files_outside_the_binds_cannot_be_read(host_dir: Path) -> None:
    private = host_dir / "private"
    private.mkdir(mode=0o755)
    secret = private / "secret.txt"
    secret.write_text("the host's secret")
    secret.chmod(0o644)  # readable by any uid: only the sandbox stands in the way
    paths = [str(secret), "/root/.bashrc", str(REPO / "README.md"), "/etc/passwd", "/etc/shadow"]

    seen = json_out(python(PROBE_FILES, SandboxSpec(), *paths))

    assert seen["files"] == dict.fromkeys(paths, "FileNotFoundError")
    assert set(seen["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32"} | {
        "proc",
        "sbin",
        "tmp",
        "usr",
    }
    # The same file is readable once bound: the binds, not file modes, made the difference.
    bound = json_out(python(PROBE_FILES, SandboxSpec(read_only=(str(private),)), str(secret)))
    assert bound["files"] == {str(secret): "the host's secret"}


def test_a_bound_folder_under_a_private_one_is_named_with_the_fix(world_readable: Path) -> None:
    # A checkout under /root (mode 0700) with a root broker: the sandbox's uid cannot walk
    # there. bwrap alone says "Permission denied"; the broker names the folder and the fix.
    private = world_readable / "root"
    private.mkdir(mode=0o700)
    docs = private / "docs"
    docs.mkdir(mode=0o755)
    (docs / "invoice.txt").write_text("INV-7 1,200.00")
    (docs / "invoice.txt").chmod(0o644)
    script = "import sys; print(open(sys.argv[1] + '/invoice.txt').read())"
    spec = SandboxSpec(read_only=(str(docs),))

    if os.geteuid() != 0:  # the sandbox runs as this user, who can walk there
        assert python(script, spec, str(docs)).stdout.decode().strip() == "INV-7 1,200.00"
        return
    with pytest.raises(errors.SandboxUnavailable) as refused:
        python(script, spec, str(docs))
    assert f"cannot reach {docs}: {private} is mode 0700" in refused.value.message
    assert f"chmod o+x {private}" in refused.value.message
    private.chmod(0o701)  # the fix it names works
    assert python(script, spec, str(docs)).stdout.decode().strip() == "INV-7 1,200.00"


def test_read_only_binds_can_be_read_but_not_changed(host_dir: Path) -> None:
    document = host_dir / "doc.txt"
    document.write_text("original")
    document.chmod(0o666)  # writable by any uid: only the read-only mount refuses
    script = """if True:
        import json, sys
        folder = sys.argv[1]
        out = {"read": open(folder + "/doc.txt").read()}
        for name, mode in (("doc.txt", "w"), ("new.txt", "x")):
            try:
                open(folder + "/" + name, mode).write("changed")
                out[name] = "written"
            except OSError as exc:
                out[name] = exc.strerror
        print(json.dumps(out))
    """

    seen = json_out(python(script, SandboxSpec(read_only=(str(host_dir),)), str(host_dir)))

    assert seen == {
        "read": "original",
        "doc.txt": "Read-only file system",
        "new.txt": "Read-only file system",
    }
    assert document.read_text() == "original"
    assert sorted(path.name for path in host_dir.iterdir()) == ["doc.txt"]


def test_read_write_binds_are_writable_also_inside_a_read_only_one(host_dir: Path) -> None:
    out = host_dir / "out"
    out.mkdir()
    out.chmod(0o777)
    script = """if True:
        import json, sys
        result = {}
        for path in sys.argv[1:]:
            try:
                open(path, "w").write("from the sandbox")
                result[path] = "written"
            except OSError as exc:
                result[path] = exc.strerror
        print(json.dumps(result))
    """
    # The read_write folder lies inside the read_only one, but is listed first.
    spec = SandboxSpec(read_write=(str(out),), read_only=(str(host_dir),))

    seen = json_out(python(script, spec, f"{out}/result.txt", f"{host_dir}/beside.txt"))

    assert seen == {
        f"{out}/result.txt": "written",
        f"{host_dir}/beside.txt": "Read-only file system",
    }
    written = out / "result.txt"
    assert written.read_text() == "from the sandbox"
    # Never host root: a file the sandbox makes belongs to an unprivileged uid.
    assert written.stat().st_uid == (SANDBOX_UID if os.geteuid() == 0 else os.geteuid())
    assert written.stat().st_uid != 0


def test_the_sandbox_has_no_capabilities_and_no_nested_user_namespaces() -> None:
    script = (
        "grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; "
        "unshare --user true 2>/dev/null && echo nested || echo no-nested"
    )

    result = run(run_sandboxed(["sh", "-c", script], SandboxSpec()))

    lines = result.stdout.decode().split("\n")
    assert [line.split()[1] for line in lines[:3]] == ["0000000000000000"] * 3
    assert lines[3] == "no-nested"


NETWORK_PROBE = """if True:
    import json, socket, sys
    out = {}
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3).close()
        out["connect"] = "connected"
    except OSError as exc:
        out["connect"] = type(exc).__name__
    try:
        socket.getaddrinfo("example.com", 443)
        out["resolve"] = "resolved"
    except OSError:
        out["resolve"] = "failed"
    with open("/proc/net/dev") as devices:
        out["interfaces"] = [line.split(":")[0].strip() for line in devices.readlines()[2:]]
    print(json.dumps(out))
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(1.0)
        yield server


def test_without_network_nothing_is_reached(listener: socket.socket) -> None:
    port = str(listener.getsockname()[1])

    seen = json_out(python(NETWORK_PROBE, SandboxSpec(), port))

    assert seen == {"connect": "ConnectionRefusedError", "resolve": "failed", "interfaces": ["lo"]}
    with pytest.raises(TimeoutError):
        listener.accept()  # nothing ever connected on the host side


def test_with_network_the_same_probe_connects(listener: socket.socket) -> None:
    # The control for the test above: the probe can connect when it is allowed to.
    port = str(listener.getsockname()[1])

    seen = json_out(python(NETWORK_PROBE, SandboxSpec(network=True), port))

    assert seen["connect"] == "connected"
    connection, _ = listener.accept()
    connection.close()


def test_a_fork_bomb_is_held_to_max_processes() -> None:
    script = """if True:
        import json, os, time
        started = refused = 0
        for _ in range(200):
            try:
                pid = os.fork()
            except OSError:
                refused += 1
                continue
            if pid == 0:  # each child holds its process slot for a while
                time.sleep(2)
                os._exit(0)
            started += 1
        print(json.dumps([started, refused]))
    """

    started, refused = json_out(python(script, SandboxSpec(max_processes=16)))

    assert 0 < started < 16
    assert refused == 200 - started


def test_max_processes_is_counted_per_sandbox_not_per_uid() -> None:
    # All sandboxes run under one host uid; each must still get its own allowance.
    script = """if True:
        import os, time
        started = 0
        for _ in range(40):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:  # each child holds its process slot for a while
                time.sleep(3)
                os._exit(0)
            started += 1
        print(started)
    """
    spec = SandboxSpec(max_processes=16, timeout=20)

    async def together() -> list[SandboxResult]:
        calls = [run_sandboxed([PYTHON, "-I", "-c", script], spec) for _ in range(4)]
        return await asyncio.gather(*calls)

    counts = {int(json_out(result)) for result in run(together())}

    assert len(counts) == 1
    assert 10 < counts.pop() < 16


def test_a_shell_fork_bomb_finishes_and_leaves_nothing(host_dir: Path) -> None:
    marker = f"bomb-{uuid.uuid4()}"
    bomb = "bomb() { bomb | bomb & }; bomb; sleep 3"
    began = time.monotonic()

    # Stopped at the timeout, or ended once it could no longer fork: both are contained.
    with contextlib.suppress(errors.UpstreamTimeout):
        run(run_sandboxed(["sh", "-c", bomb, marker], SandboxSpec(timeout=5, max_processes=24)))

    assert time.monotonic() - began < 15
    assert_none_survive(marker)


def test_memory_beyond_memory_mb_is_refused() -> None:
    script = """if True:
        import json, mmap
        out = {}
        try:
            hog = bytearray(512 * 2**20)
            out["heap"] = "allocated"
        except MemoryError:
            out["heap"] = "refused"
        try:
            shared = mmap.mmap(-1, 512 * 2**20, flags=mmap.MAP_SHARED)
            out["shared"] = "allocated"
        except OSError:
            out["shared"] = "refused"
        modest = bytearray(32 * 2**20)
        out["modest"] = "allocated"
        print(json.dumps(out))
    """

    seen = json_out(python(script, SandboxSpec(memory_mb=128)))

    assert seen == {"heap": "refused", "shared": "refused", "modest": "allocated"}


def test_a_plain_memory_hog_fails() -> None:
    result = python("x = b'x' * 2**30", SandboxSpec(memory_mb=128))

    assert result.exit_code != 0
    assert b"MemoryError" in result.stderr


def test_cpu_seconds_stop_a_busy_loop() -> None:
    began = time.monotonic()

    result = python("while True: pass", SandboxSpec(cpu_seconds=1, timeout=30))

    assert result.exit_code in (128 + 9, 128 + 24)  # SIGKILL or SIGXCPU
    assert time.monotonic() - began < 10


def test_file_size_tmp_space_and_writable_places_are_bounded() -> None:
    script = """if True:
        import json
        out = {}
        def write(path, mib):
            try:
                with open(path, "wb") as file:
                    for _ in range(mib):
                        file.write(b"x" * 2**20)
                return "written"
            except OSError as exc:
                return exc.strerror
        out["big"] = write("/tmp/work/big", 3)
        out["many"] = [write(f"/tmp/part-{n}", 1) for n in range(6)]
        out["elsewhere"] = [write(path, 1) for path in ("/dev/shm/x", "/dev/x", "/x", "/usr/x")]
        print(json.dumps(out))
    """

    seen = json_out(python(script, SandboxSpec(max_file_mb=2, tmp_mb=4)))

    assert seen["big"] == "File too large"
    assert "No space left on device" in seen["many"]
    # tmpfs is host memory: outside /tmp nothing is writable at all.
    assert seen["elsewhere"] == ["Read-only file system"] * 4


def test_a_sleeper_is_killed_at_the_timeout_with_everything_it_started(host_dir: Path) -> None:
    marker = f"sleeper-{uuid.uuid4()}"
    script = """if True:
        import subprocess, sys, time
        marker, folder = sys.argv[1], sys.argv[2]
        # children that would outlive the test by far: the timeout (1.5 s) must kill them all
        sleep = [sys.executable, "-c", "import time; time.sleep(1000)", marker]
        for _ in range(3):
            subprocess.Popen(sleep)
        subprocess.Popen(sleep, start_new_session=True)  # as a daemon would
        open(folder + "/started", "w").close()
        time.sleep(1000)  # the script itself too: the timeout ends it
    """
    spec = SandboxSpec(timeout=1.5, read_write=(str(host_dir),))

    async def scenario() -> int:
        call = asyncio.create_task(
            run_sandboxed([PYTHON, "-c", script, marker, str(host_dir)], spec)
        )
        await wait_for_file(host_dir / "started")
        running = len(processes_with(marker))
        with pytest.raises(errors.UpstreamTimeout, match=r"did not finish within 1\.5s"):
            await call
        return running

    began = time.monotonic()
    running = run(scenario())

    assert time.monotonic() - began < 10
    assert running >= 5  # bwrap, the script and its four sleepers were there
    assert_none_survive(marker)


def test_the_callers_deadline_wins_when_it_is_sooner() -> None:
    began = time.monotonic()

    with pytest.raises(errors.UpstreamTimeout) as raised:
        run(run_sandboxed(["sleep", "60"], SandboxSpec(timeout=60), deadline=began + 1))

    assert time.monotonic() - began < 10
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert raised.value.reason == "UPSTREAM_TIMEOUT"


def test_a_deadline_already_past_runs_nothing(host_dir: Path) -> None:
    spec = SandboxSpec(read_write=(str(host_dir),))
    deadline = time.monotonic() - 1

    with pytest.raises(errors.UpstreamTimeout, match="before the command started"):
        run(run_sandboxed(["touch", f"{host_dir}/ran"], spec, deadline=deadline))

    assert list(host_dir.iterdir()) == []


def test_a_cancelled_call_leaves_nothing_running(host_dir: Path) -> None:
    marker = f"cancelled-{uuid.uuid4()}"
    spec = SandboxSpec(timeout=60, read_write=(str(host_dir),))
    script = f"touch {host_dir}/started; sleep 1000; : {marker}"

    async def scenario() -> None:
        call = asyncio.create_task(run_sandboxed(["sh", "-c", script, marker], spec))
        await wait_for_file(host_dir / "started")
        assert processes_with(marker)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    run(scenario())

    assert_none_survive(marker)


def test_output_beyond_the_caps_is_cut_and_flagged() -> None:
    script = (
        "import sys; sys.stdout.write('o' * 3 * 2**20); sys.stderr.write('e' * 200_000); "
        "sys.exit(4)"
    )

    result = python(script, SandboxSpec(max_stdout=1000, max_stderr=10))

    assert result == SandboxResult(4, b"o" * 1000, b"e" * 10, True, True)


def test_output_exactly_at_the_cap_is_not_flagged() -> None:
    result = python("print('x' * 999)", SandboxSpec(max_stdout=1000))

    assert (len(result.stdout), result.stdout_truncated) == (1000, False)


def test_endless_output_is_still_stopped_at_the_timeout() -> None:
    began = time.monotonic()

    with pytest.raises(errors.UpstreamTimeout):
        run(run_sandboxed(["yes"], SandboxSpec(timeout=1, max_stdout=100)))

    assert time.monotonic() - began < 10


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, with a correct cross-reference table."""
    content = b"BT /F1 24 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    pdf = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(pdf))
        pdf += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(pdf)
    pdf += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    pdf += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    pdf += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n" % (len(objects) + 1, xref)
    return bytes(pdf + b"%%EOF\n")


def test_pdftotext_runs_on_a_pdf_in_a_read_only_folder(host_dir: Path) -> None:
    if shutil.which("pdftotext") is None:
        unavailable("pdftotext is not installed (Debian: poppler-utils)")
    document = host_dir / "letter.pdf"
    document.write_bytes(minimal_pdf("Hello from the sandbox"))
    document.chmod(0o644)
    spec = SandboxSpec(read_only=(str(host_dir),))

    result = run(run_sandboxed(["pdftotext", "-layout", str(document), "-"], spec))

    assert result.exit_code == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "Hello from the sandbox"


def test_the_wordcount_example_tool(host_dir: Path) -> None:
    # a copy: the checkout itself may sit in a folder the sandbox's uid cannot enter
    scripts = host_dir / "scripts"
    shutil.copytree(REPO / "tools" / "scripts", scripts)
    scripts.chmod(0o755)
    spec = SandboxSpec(read_only=(str(scripts),))
    argv = [PYTHON, "-I", str(scripts / "wordcount.py")]

    done = run(run_sandboxed(argv, spec, stdin=b'{"text": "one two  three\\nfour"}'))
    failed = run(run_sandboxed(argv, spec, stdin=b"not json"))

    assert json_out(done) == {"words": 4, "lines": 2, "characters": 19}
    assert failed.exit_code == 2
    assert b"not JSON" in failed.stderr


def test_without_bubblewrap_the_sandbox_is_unavailable() -> None:
    missing = "/nonexistent/bwrap"

    reason = sandbox_available(missing)
    with pytest.raises(errors.SandboxUnavailable) as raised:
        run(run_sandboxed(["true"], SandboxSpec(), bwrap=missing))

    assert reason is not None
    assert "apt-get install bubblewrap" in reason
    assert raised.value.message == reason
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert raised.value.reason == "SANDBOX_UNAVAILABLE"


def test_a_bubblewrap_that_cannot_make_namespaces_fails_closed(host_dir: Path) -> None:
    fake = host_dir / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)

    reason = sandbox_available(str(fake))
    with pytest.raises(errors.SandboxUnavailable):
        run(run_sandboxed(["true"], SandboxSpec(), bwrap=str(fake)))

    assert reason is not None
    assert "No permissions to create new namespace" in reason
    assert "user namespaces" in reason


def test_a_bind_that_cannot_be_made_is_unavailable_not_a_tool_error() -> None:
    spec = SandboxSpec(read_only=("/nonexistent/docs",))

    with pytest.raises(errors.SandboxUnavailable, match="/nonexistent/docs"):
        run(run_sandboxed(["true"], spec))


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"read_only": ("docs",)}, "absolute"),
        ({"read_write": ("/srv/../etc",)}, "normalised"),
        ({"read_only": ("/",)}, "root"),
        ({"read_only": ("/proc/1",)}, "/proc"),
        ({"env": {"A=B": "x"}}, "A=B"),
        ({"timeout": 0}, "timeout"),
        ({"max_processes": 0}, "max_processes"),
    ],
)
def test_a_spec_that_cannot_be_honoured_is_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        SandboxSpec(**settings)


def test_the_command_line_keeps_the_tool_argv_last_and_whole() -> None:
    argv = ["pdftotext", "-layout", "--unshare-net", "-"]

    command = build_command(argv, SandboxSpec(network=True), bwrap="/usr/bin/bwrap")

    assert command[-len(argv) - 1 :] == ["--", *argv]
    assert "--unshare-net" not in command[: -len(argv)]
    assert "--unshare-net" in build_command(argv, SandboxSpec(), bwrap="/usr/bin/bwrap")
