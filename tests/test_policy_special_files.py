"""Only regular files are policy files: a FIFO or a device never blocks or floods the loader.

Opening a FIFO for reading waits for a writer, and ``/dev/zero`` never ends:
before, either one in the policy directory froze the daemon's reload (on the
event loop) and hung ``healer validate``. Each is now an error naming the
file, and a reload that meets one keeps the last good set.

The ``healer validate`` runs are subprocesses with a timeout and a memory
cap, so that a regression fails the test instead of hanging or exhausting
the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from healer.policy.loader import MAX_FILE_BYTES, PolicyDirectory, load_paths

GOOD = "name: p\nwhen: {status: UNKNOWN}\naction: restart\n"
HEALER = Path(sys.executable).with_name("healer")


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    def cap_memory() -> None:
        limit = 1024 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run(
        [str(HEALER), "validate", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=cap_memory,
        check=False,
    )


@pytest.fixture
def with_fifo(tmp_path: Path) -> Path:
    (tmp_path / "good.yaml").write_text(GOOD)
    os.mkfifo(tmp_path / "pipe.yaml")
    return tmp_path


def release(fifo: Path) -> None:
    """Let a reader blocked on ``fifo`` go (the test then fails on its assertion, not a hang)."""
    with contextlib.suppress(OSError):
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


class TestValidate:
    def test_a_fifo_in_the_directory_is_an_error_naming_it(self, with_fifo: Path) -> None:
        done = validate(with_fifo)

        assert done.returncode == 1
        assert f"{with_fifo / 'pipe.yaml'}:1:1: not a regular file" in done.stdout

    @pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
    def test_a_symlink_to_an_endless_device_is_an_error_naming_it(
        self, tmp_path: Path, device: str
    ) -> None:
        (tmp_path / "good.yaml").write_text(GOOD)
        (tmp_path / "dev.yaml").symlink_to(device)

        done = validate(tmp_path)

        assert done.returncode == 1
        assert f"{tmp_path / 'dev.yaml'}:1:1: not a regular file" in done.stdout

    def test_a_device_given_by_name_is_an_error_too(self) -> None:
        done = validate(Path("/dev/zero"))

        assert done.returncode == 1
        assert "/dev/zero:1:1: not a regular file" in done.stdout


class TestBoundedRead:
    def test_a_file_growing_past_the_bound_after_a_check_is_still_refused(
        self, tmp_path: Path
    ) -> None:
        # The size is judged from what was read, not from stat: one byte over is refused.
        path = tmp_path / "big.yaml"
        path.write_text("#" * MAX_FILE_BYTES + "\n")

        result = load_paths([path])

        assert [e.message for e in result.errors] == ["file is larger than 256 KiB; split it"]


class TestReload:
    async def test_a_fifo_appearing_keeps_the_last_good_set(self, tmp_path: Path) -> None:
        (tmp_path / "good.yaml").write_text(GOOD)
        policies = PolicyDirectory(tmp_path)
        assert policies.reload().ok
        first = policies.policies
        os.mkfifo(tmp_path / "pipe.yaml")

        task = asyncio.ensure_future(asyncio.to_thread(policies.reload))
        done, _ = await asyncio.wait({task}, timeout=30)
        if not done:
            release(tmp_path / "pipe.yaml")
        result = await task

        assert done, "the reload blocked on the FIFO"
        assert [str(e) for e in result.errors] == [
            f"{tmp_path / 'pipe.yaml'}:1:1: not a regular file"
        ]
        assert policies.policies is first
