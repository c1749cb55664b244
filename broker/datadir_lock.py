"""The data directory's lock: one broker process (or one ``--workers`` worker) per lock file."""

from __future__ import annotations

import fcntl
import os

from broker import errors


class DataDirLock:
    """An exclusive lock on the data directory: two brokers never share one database."""

    def __init__(self, data_dir: os.PathLike[str], name: str = "broker.lock") -> None:
        self.path = os.path.join(data_dir, name)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise ConfigError naming the directory."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise errors.ConfigError(
                self.path, "another broker is running on this data_dir; stop it or use another"
            ) from None
        self._fd = fd

    def release(self) -> None:
        """Let go of the lock."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
