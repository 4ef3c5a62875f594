"""The first hour of a new user, on a clean copy of the repository and a machine without apt:
``make run``, then every command of the README's first steps typed as shown, then the banner's
commands; and a client-only ``pip install`` that talks to that broker.

The shell has a PATH of our own making: every program of this machine's PATH except apt-get,
dpkg, sudo and promtool (a machine that is not Debian), and none of a venv's (``make run`` never
activates one); python3 is the interpreter the tests run on. This is slow (two venvs are
installed from the package index), hence one module sharing one ``make run``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.integration.cli_procs import REPO, free_port, wait_for
from tq.cli.extras import SERVER_EXTRA

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

#: What a machine without Debian's tools lacks, and what only a venv provides.
HIDDEN = {"apt", "apt-get", "apt-cache", "apt-key", "dpkg", "dpkg-query", "sudo", "promtool"}
VENV_NAMES = re.compile(r"(python|pip|tq|activate)")
INSTALL_TIMEOUT_S = 420.0


def first_steps() -> list[str]:
    """The commands of the README's first-steps block, as a user types them."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"### First steps\n.*?```bash\n(.*?)```", readme, re.DOTALL)
    assert block is not None, "README.md has no first-steps block"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


QUICKSTART = r"5\n49\nfailed: task [0-9a-f-]{36} failed: ValueError: no luck\n"
#: What each first step prints; the README must list exactly these.
EXPECTED: dict[str, Callable[[str], bool]] = {
    "source .venv/bin/activate": lambda out: out == "",
    "python examples/quickstart.py": lambda out: re.fullmatch(QUICKSTART, out) is not None,
    "python examples/raw_submit.py": lambda out: out == '{"hello": "world"}\n',
    "tq submit examples.add '{\"args\": [2, 3]}' --wait": lambda out: out == "5\n",
    "bash examples/cli.sh": lambda out: out.startswith('{"x": 1}\n') and "bulk" in out,
}


def clean_copy(dest: Path) -> None:
    """The files a clone of this work tree would have (tracked, and new but not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, timeout=60, check=True,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():  # a tracked file deleted in the work tree is not copied
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def shell_path(bindir: Path) -> str:
    """A bin dir of links to this PATH's programs, but those of HIDDEN and of venvs."""
    bindir.mkdir()
    own_venv = Path(sys.executable).parent
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        folder = Path(entry)
        if not folder.is_dir() or folder == own_venv or (folder / "activate").exists():
            continue
        for program in folder.iterdir():
            name = program.name
            if name in HIDDEN or VENV_NAMES.match(name) or (bindir / name).exists():
                continue
            if program.is_file() and os.access(program, os.X_OK):
                (bindir / name).symlink_to(program)
    # python3 is the interpreter itself (not a pyenv shim, not this venv's).
    python3 = bindir / "python3"
    python3.write_text(f'#!/bin/sh\nexec {sys._base_executable} "$@"\n')  # type: ignore[attr-defined]
    python3.chmod(0o755)
    return str(bindir)


def shell_env(path: str, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("TQ_", "VIRTUAL_ENV"))}
    keep.pop("PYTHONPATH", None)
    keep.pop("PYTHONHOME", None)
    return {**keep, "PATH": path, **extra}


@dataclass
class MakeRun:
    repo: Path
    path: str
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeRun]:
    if shutil.which("make") is None or not (REPO / ".git").exists():
        pytest.skip("needs make and a git checkout of tq")
    tmp = tmp_path_factory.mktemp("first-steps")
    repo = tmp / "tq"
    clean_copy(repo)
    path = shell_path(tmp / "bin")
    assert shutil.which("apt-get", path=path) is None
    assert shutil.which("tq", path=path) is None
    port = free_port()
    # Other tests run beside this one: the broker and its doors take free ports.
    env = shell_env(
        path,
        TQ_BROKER__PORT=str(port),
        TQ_API__REST_PORT="0",
        TQ_API__GRPC_PORT="0",
        TQ_MONITORING__PROMETHEUS_PORT="0",
    )
    log = tmp / "make-run.log"
    with log.open("wb") as out:
        # Its own session: the test's Ctrl-C reaches make and tq dev as a terminal's would.
        proc = subprocess.Popen(
            ["make", "run"], cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    run = MakeRun(repo, path, f"tq://127.0.0.1:{port}", log)
    try:

        def banner() -> bool | None:
            assert proc.poll() is None, run.output()[-4000:]
            return "stop:" in run.output() or None

        wait_for("make run to install tq and print its banner", banner, INSTALL_TIMEOUT_S)
        yield run
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", run.output())]
        deadline = time.monotonic() + 10
        while [p for p in pids if psutil.pid_exists(p)] and time.monotonic() < deadline:
            time.sleep(0.1)  # reaped children vanish from /proc a moment later
        assert "tq dev: stopped" in run.output(), run.output()[-4000:]
        assert not [p for p in pids if psutil.pid_exists(p)]


def shell(run: MakeRun, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", script], cwd=run.repo, env=shell_env(run.path, **env),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_make_run_installs_only_the_server_extra_without_apt_get(make_run: MakeRun) -> None:
    out = make_run.output()
    assert "install-test-deps" not in out
    assert "apt-get" not in out
    venv = make_run.repo / ".venv"
    assert (venv / ".installed-server").exists()
    assert not (venv / ".installed-dev").exists()
    assert not (venv / "bin" / "pytest").exists()  # the dev extra is make test's
    assert f"  TCP        {make_run.url}\n" in out


def test_the_readme_s_first_steps_work_as_typed(make_run: MakeRun) -> None:
    steps = first_steps()
    assert steps == list(EXPECTED)
    script = "set -e\n" + "".join(f"echo '@@step'\n{step}\n" for step in steps)
    # The README's commands reach the default address; this broker has a free port instead.
    done = shell(make_run, script, TQ_BROKER_URL=make_run.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    outputs = done.stdout.split("@@step\n")[1:]
    assert len(outputs) == len(steps)
    wrong = [
        (step, out) for step, out in zip(steps, outputs, strict=True) if not EXPECTED[step](out)
    ]
    assert not wrong


def test_the_commands_of_the_banner_work_as_typed(make_run: MakeRun) -> None:
    banner = make_run.output().split("  try:", 1)[1].split("  stop:", 1)[0]
    typed = [line.strip() for line in banner.splitlines() if line.strip()]
    commands = [line for line in typed if not line.startswith("(or ")]
    assert commands[0].startswith(".venv/bin/tq ")
    assert any(line.startswith("(or `source .venv/bin/activate`") for line in typed)
    for command in commands:
        done = shell(make_run, command)
        assert done.returncode == 0, f"{command}: {done.stderr}"


def test_a_client_only_install_runs_clients_and_workers_but_no_broker(
    make_run: MakeRun, tmp_path: Path
) -> None:
    venv = tmp_path / "client"
    install = f"python3 -m venv {venv} && {venv}/bin/python -m pip install --quiet {make_run.repo}"
    done = subprocess.run(
        ["bash", "-c", install], env=shell_env(make_run.path), capture_output=True, text=True,
        timeout=INSTALL_TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    listed = shell(make_run, f"{venv}/bin/python -m pip list --format json")
    installed = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert "msgspec" in installed
    assert not installed & {name.lower() for name in SERVER_EXTRA}

    tq = f"{venv}/bin/tq --url {make_run.url}"
    refused = shell(make_run, f"{venv}/bin/tq broker")
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: `tq broker` runs a broker, which needs the server")
    assert len(refused.stderr.splitlines()) == 1

    submitted = shell(make_run, f"{tq} submit echo '{{\"c\": 1}}' --queue client-only")
    assert submitted.returncode == 0, submitted.stderr
    task_id = submitted.stdout.strip()
    worker = shell(make_run, f"{tq} worker tq.worker.examples --queues client-only --burst")
    assert worker.returncode == 0, worker.stderr
    status = shell(make_run, f"{tq} -o json status {task_id}")
    assert status.returncode == 0, status.stderr
    (record,) = json.loads(status.stdout)
    assert record["state"] == "completed"
