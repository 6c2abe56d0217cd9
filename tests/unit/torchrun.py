"""Launch a test module under ``torchrun`` (gloo on CPU) and fail with its output when a rank fails."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def repo_pythonpath() -> str:
    """``PYTHONPATH`` for a child process: the repository first, then the caller's own entries (site dirs such as
    the device machine's ``/tmp/site`` that holds megatron-core)."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def free_port() -> int:
    """A TCP port nobody listens on right now (for ``--master_port``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_torchrun(module: str, *args: str, nproc: int = 2, cwd: Path = REPO, timeout: float = 600) -> str:
    """``torchrun --nproc_per_node=nproc -m module args...``; returns its output, asserts every rank exited 0.

    On a timeout the whole process group (launcher and workers) is killed, so a hung collective cannot outlive the
    test; the generous default leaves room for a loaded 2-core CI machine.
    """
    env = {**os.environ, "PYTHONPATH": repo_pythonpath(), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           "-m", module, *args]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}:\n{output[-4000:]}"
    return output
