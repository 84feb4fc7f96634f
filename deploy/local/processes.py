"""Starts and stops the api, the worker and the participants as background processes.

Usage: processes.py start|stop|status. Pid files and logs live under .local/ (git-ignored).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / ".local" / "run"
LOGS = ROOT / ".local" / "logs"
BIN = Path(sys.executable).parent

sys.path.insert(0, str(ROOT))
from participants import registry  # noqa: E402  # the shipped participants, by convention

PROCESSES = {
    "api": [str(BIN / "orchestrator"), "api"],
    "worker": [str(BIN / "orchestrator"), "worker"],
    **{name: [str(BIN / "participants"), "worker", name] for name in registry.shipped_names()},
}


def pid_of(name: str) -> int | None:
    path = RUN / f"{name}.pid"
    try:
        pid = int(path.read_text())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        path.unlink(missing_ok=True)
        return None
    return pid


def start() -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    LOGS.mkdir(parents=True, exist_ok=True)
    for name, command in PROCESSES.items():
        if pid_of(name):
            print(f"{name:<10} already running (pid {pid_of(name)})")
            continue
        with (LOGS / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (RUN / f"{name}.pid").write_text(str(process.pid))
        print(f"{name:<10} started (pid {process.pid}), log: .local/logs/{name}.log")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    if not (env.get("SAGA_VIEWER_TOKENS") or env.get("SAGA_OPERATOR_TOKENS")):
        env["SAGA_INSECURE_DEV"] = "1"
    return env


def insecure() -> bool:
    return _env().get("SAGA_INSECURE_DEV") == "1"


def stop() -> None:
    running = {name: pid for name in PROCESSES if (pid := pid_of(name))}
    for pid in running.values():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for name, pid in running.items():
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        (RUN / f"{name}.pid").unlink(missing_ok=True)
        print(f"{name:<10} stopped")


def status() -> None:
    for name in PROCESSES:
        pid = pid_of(name)
        print(f"{name:<10} {f'running (pid {pid})' if pid else 'not running'}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # reap it if it is our child, so that it does not linger as a zombie
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


if __name__ == "__main__":
    commands = {"start": start, "stop": stop, "status": status}
    if len(sys.argv) != 2 or sys.argv[1] not in commands:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(commands)}")
    commands[sys.argv[1]]()
