"""Worker processes for CPU-heavy work on big answers, so the event loop keeps serving.

Cleaning a 1 MB HTML answer takes most of a second of CPU, and redacting or re-encoding a few
MB takes tens of milliseconds; on the event loop every other call would wait that long. Work on
a payload of at least ``threshold`` bytes runs in a worker process instead; smaller work runs
inline, where it costs less than the trip to another process.

Each worker is ``python -m broker.workers``, started by the broker with pipes on its stdin and
stdout, like the audit writer: a job goes in as one frame (a pickle of the job id, the
function's module and name, and the arguments, followed by the raw bytes of every big string or
bytes in them, which the pickle names rather than copies: pickling 4 MB costs the loop ~2 ms,
sending the bytes as they are ~0.1 ms); the answer comes back as one pickle (the result, or the
BrokerError it raised), read without copying. Pickle is safe here: the pipes run between the
broker and the processes it started, and nothing else can write to them. A worker runs one job
at a time, yielding the CPU to the broker's loop (``broker.worker_priority``), ignores Ctrl-C
and SIGTERM (the broker stops it by closing its stdin), and exits when the broker is gone. A
worker that dies takes its job with it (INTERNAL, logged); the next job starts a new one.
(multiprocessing's pools are not used: their spawned processes import the program's
``__main__`` again, which starts a second broker in a script that embeds one.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import importlib
import io
import itertools
import logging
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import Any, BinaryIO, TypeVar, cast

from broker import errors
from broker.worker_priority import Priority

T = TypeVar("T")
log = logging.getLogger(__name__)

OFFLOAD_BYTES = 64 * 1024  # measured in BENCHMARKS.md ("Big answers")
FRAME = struct.Struct("!I")  # an answer's length
JOB = struct.Struct("!II")  # a job's pickle length and how many raw parts follow it
PART = struct.Struct("!IB")  # a raw part's length, and whether it is text (UTF-8) or bytes
RAW_PART_BYTES = 64 * 1024  # a string or bytes this big goes beside the pickle, not in it
PIPE_BYTES = 1 << 20  # fewer, bigger reads and writes for a big answer (Linux; else ignored)


class _Worker(asyncio.SubprocessProtocol):
    """One worker process, and the job it is doing."""

    def __init__(self) -> None:
        self.transport: asyncio.SubprocessTransport | None = None
        self._buffer = bytearray()
        self._job: asyncio.Future[Any] | None = None
        self.exited = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.SubprocessTransport, transport)

    @property
    def alive(self) -> bool:
        return not self.exited.done()

    def submit(self, job_id: int, work: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """Send a job; the future is done with its answer."""
        assert self.transport is not None
        self._job = asyncio.get_running_loop().create_future()
        stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))
        stdin.writelines(job_frame((job_id, work.__module__, work.__qualname__, args)))
        return self._job

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= FRAME.size:
            (size,) = FRAME.unpack_from(self._buffer)
            end = FRAME.size + size
            if len(self._buffer) < end:
                return
            with memoryview(self._buffer) as view:  # loaded in place, not copied out first
                # the pipe comes from the process this broker started, and nothing else
                answer = pickle.loads(view[FRAME.size : end])  # noqa: S301
            del self._buffer[:end]
            self._answered(*answer)

    def _answered(self, job_id: int, ok: bool, value: Any) -> None:
        job, self._job = self._job, None
        if job is None or job.done():
            return
        if ok:
            job.set_result(value)
        else:
            job.set_exception(value)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)
        job, self._job = self._job, None
        if job is not None and not job.done():
            job.set_exception(errors.InternalError("the worker process stopped during the job"))

    def close(self) -> None:
        """Close its stdin: it finishes the job it has and exits."""
        if self.transport is not None:
            stdin = self.transport.get_pipe_transport(0)
            if stdin is not None:
                stdin.close()


class Workers:
    """Up to ``processes`` worker processes, started when a big answer first needs one (a
    broker that never sees one starts none; the first waits a few hundred ms for it)."""

    def __init__(self, processes: int | None = None, *, threshold: int = OFFLOAD_BYTES) -> None:
        # one core stays the event loop's
        self._processes = processes or max(1, (os.cpu_count() or 2) - 1)
        self.threshold = threshold
        self._command = [sys.executable, "-m", "broker.workers"]
        self._idle: asyncio.Queue[_Worker] | None = None
        self._all: list[_Worker] = []
        self._starting = 0
        self._ids = itertools.count(1)
        self._closed = False

    async def run(self, size: int, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)``: inline when ``size`` (bytes of the payload) is under the threshold,
        else in a worker process (``work`` must be a module-level function; ``args`` and its
        result must pickle)."""
        if size < self.threshold:
            return work(*args)
        worker = await self._take()
        try:
            result: T = await worker.submit(next(self._ids), work, args)
        except errors.InternalError:
            log.error("a worker process stopped during %s (%d bytes)", work.__qualname__, size)
            raise errors.InternalError(
                f"the worker process handling a {size:,}-byte answer stopped; the call was "
                "not completed (the broker log has more)"
            ) from None
        finally:
            self._give_back(worker)
        return result

    async def close(self) -> None:
        """Stop every worker (each finishes the job it has)."""
        self._closed = True
        workers, self._all = self._all, []
        for worker in workers:
            worker.close()
        for worker in workers:
            try:
                await asyncio.wait_for(asyncio.shield(worker.exited), 10.0)
            except TimeoutError:
                if worker.transport is not None:
                    worker.transport.kill()
            if worker.transport is not None:
                worker.transport.close()

    async def _take(self) -> _Worker:
        queue = self._queue()
        while True:
            if queue.empty() and len(self._all) + self._starting < self._processes:
                await self._spawn()
            worker = await queue.get()
            if worker.alive:
                return worker
            self._forget(worker)

    def _give_back(self, worker: _Worker) -> None:
        if worker.alive and not self._closed:
            self._queue().put_nowait(worker)
        else:
            self._forget(worker)

    def _forget(self, worker: _Worker) -> None:
        if worker in self._all:
            self._all.remove(worker)
        if worker.transport is not None:
            worker.transport.close()

    async def _spawn(self) -> None:
        if self._closed:
            raise errors.InternalError("the broker is stopping")
        self._starting += 1
        try:
            _, worker = await asyncio.get_running_loop().subprocess_exec(
                _Worker, *self._command, stdin=-1, stdout=-1, stderr=None
            )
        except OSError as exc:
            raise errors.InternalError(f"cannot start a worker process: {exc}") from None
        finally:
            self._starting -= 1
        self._all.append(worker)
        self._queue().put_nowait(worker)

    def _queue(self) -> asyncio.Queue[_Worker]:
        if self._idle is None:
            self._idle = asyncio.Queue()
        return self._idle


class _RawParts(pickle.Pickler):
    """Pickles with every big ``str`` or ``bytes`` left out, as a numbered raw part."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=5)
        self.parts: list[tuple[bool, bytes]] = []

    def persistent_id(self, obj: Any) -> int | None:
        kind = type(obj)
        if (kind is str or kind is bytes) and len(obj) >= RAW_PART_BYTES:
            text = kind is str
            # surrogatepass: a JSON string may decode to a lone surrogate (the escape \ud800)
            self.parts.append((text, obj.encode("utf-8", "surrogatepass") if text else obj))
            return len(self.parts) - 1
        return None


def job_frame(job: tuple[Any, ...]) -> list[bytes]:
    """A job as the pieces to write: its pickle, then each big string's or bytes' raw part."""
    buffer = io.BytesIO()
    pickler = _RawParts(buffer)
    pickler.dump(job)
    parts = pickler.parts
    head = JOB.pack(buffer.tell(), len(parts)) + b"".join(
        PART.pack(len(data), text) for text, data in parts
    )
    return [head, buffer.getvalue(), *(data for _, data in parts)]


class _WithParts(pickle.Unpickler):
    """Unpickles a job, putting its raw parts back where the pickle names them."""

    def __init__(self, data: bytes, parts: list[tuple[bool, bytes]]) -> None:
        super().__init__(io.BytesIO(data))
        self._parts = parts

    def persistent_load(self, pid: Any) -> Any:
        text, data = self._parts[pid]
        return data.decode("utf-8", "surrogatepass") if text else data


def _widen(fd: int) -> None:
    """A bigger pipe (its size is the pipe's, whichever end sets it)."""
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: it stays
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


# -- the worker's side ------------------------------------------------------------------------


def serve(source: int, sink: int, priority: Priority) -> None:
    """Run jobs until the input ends (the broker closed it, or is gone)."""
    with open(source, "rb", buffering=PIPE_BYTES, closefd=False) as jobs:
        while job := _read_job(jobs):
            priority.job_starts()
            try:
                answer = pickle.dumps(_do(*job), protocol=5)
            finally:
                priority.job_ends()
            _write_all(sink, FRAME.pack(len(answer)))
            _write_all(sink, answer)


def _read_job(jobs: BinaryIO) -> tuple[Any, ...] | None:
    """The next job, or None when the input has ended."""
    head = jobs.read(JOB.size)
    if len(head) < JOB.size:
        return None
    size, count = JOB.unpack(head)
    sizes = [PART.unpack(_exactly(jobs, PART.size)) for _ in range(count)]
    data = _exactly(jobs, size)
    parts = [(bool(text), _exactly(jobs, length)) for length, text in sizes]
    # the pipe comes from the broker that started this process, and nothing else
    job: tuple[Any, ...] = _WithParts(data, parts).load()
    return job


def _exactly(jobs: BinaryIO, size: int) -> bytes:
    data = jobs.read(size)
    if len(data) < size:
        raise EOFError("the broker closed the pipe in the middle of a job")
    return data


def _do(job_id: int, module: str, name: str, args: tuple[Any, ...]) -> tuple[int, bool, Any]:
    try:
        work = getattr(importlib.import_module(module), name)
        return job_id, True, work(*args)
    except errors.BrokerError as exc:
        return job_id, False, exc
    except Exception:  # a bug: logged here, a plain InternalError for the broker
        log.exception("job %s.%s failed", module, name)
        return job_id, False, errors.InternalError(f"{name} failed in a worker process")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description="a broker worker process (started by it)").parse_args(argv)
    # the broker stops us by closing our input, after the answers it waits for
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    priority = Priority()
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    _widen(sys.stdin.fileno())
    _widen(sys.stdout.fileno())
    with contextlib.suppress(BrokenPipeError, EOFError):
        serve(sys.stdin.fileno(), sys.stdout.fileno(), priority)
    return 0


if __name__ == "__main__":
    sys.exit(main())
