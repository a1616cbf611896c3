"""Stopping the processes the tests start."""

import signal
import subprocess


def stop(proc, timeout=10):
    """SIGTERM, then SIGKILL if it has not exited within `timeout`.
    Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode
