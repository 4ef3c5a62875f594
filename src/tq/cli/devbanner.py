"""What ``tq dev`` prints once its broker listens: every address it serves (from the broker's
ready file, so ports picked at random show as bound), and commands to try that work as typed
in the directory it was started from: the venv's ``tq`` by its path when ``tq`` is not on PATH.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tq.config import Settings, WorkerSettings

#: The handlers module that ``tq dev`` serves when given none: echo, sleep and json.
RAW_EXAMPLES = "tq.worker.examples"
#: The typed tasks of the repository's examples/, which examples/quickstart.py calls.
TYPED_EXAMPLES = "examples.tasks"
QUICKSTART = Path("examples/quickstart.py")
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1", "": "127.0.0.1"}  # noqa: S104


def dial_host(host: str) -> str:
    """Where a client on this machine reaches a listener bound to ``host`` (in URL form)."""
    host = _WILDCARDS.get(host, host)
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True)
class Commands:
    """How to type ``tq`` and ``python`` in ``cwd``; ``activate`` when that would shorten them."""

    tq: str
    python: str
    activate: str | None

    @classmethod
    def here(cls, cwd: Path) -> Commands:
        """The commands of this interpreter's environment, as seen from ``cwd``."""
        bindir = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
        script = bindir / "tq"
        python = _shown(Path(sys.executable), cwd)
        if not script.exists():  # run from a source tree without the console scripts
            return cls(f"{python} -m tq", python, None)
        found = shutil.which("tq")
        if found is not None and Path(found).resolve() == script.resolve():
            return cls("tq", "python", None)
        activate = bindir / "activate"
        hint = f"source {_shown(activate, cwd)}" if activate.exists() else None
        return cls(_shown(script, cwd), python, hint)


def _shown(path: Path, cwd: Path) -> str:
    """``path`` relative to ``cwd`` when it lies below it (``.venv/bin/tq``), else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        text = str(absolute.relative_to(Path(os.path.abspath(cwd))))
    except ValueError:
        text = str(absolute)
    return shlex.quote(text)


def addresses(settings: Settings, url: str, ports: Mapping[str, int]) -> list[tuple[str, str]]:
    """(what, where) of each door: the ports are the broker's ready file's, as bound."""
    api, mon = settings.api, settings.monitoring
    s = "s" if settings.auth.tls_enabled else ""  # every door speaks TLS, or none
    rows = [("TCP", url)]
    if "rest_port" in ports:
        base = f"http{s}://{dial_host(api.rest_host)}:{ports['rest_port']}"
        if api.rest_enabled:
            rows += [("REST", f"{base}/v1  (e.g. {base}/v1/stats)"), ("docs", f"{base}/docs")]
        if api.websocket_enabled:
            ws = f"ws{s}://{dial_host(api.rest_host)}:{ports['rest_port']}/ws"
            rows.append(("WebSocket", ws))
    else:
        rows.append(("REST", "off (api.rest_enabled and api.websocket_enabled are false)"))
    if "grpc_port" in ports:
        rows.append(("gRPC", f"{dial_host(api.grpc_host)}:{ports['grpc_port']}"))
    else:
        rows.append(("gRPC", "off (api.grpc_enabled is false)"))
    if "metrics_port" in ports:
        where = f"http{s}://{dial_host(mon.prometheus_host)}:{ports['metrics_port']}/metrics"
        rows.append(("metrics", where))
    else:
        rows.append(("metrics", "off (monitoring.prometheus_enabled is false)"))
    rows.append(("dashboard", "not built yet"))
    return rows


def typed_url() -> str:
    """The broker a ``tq`` command or examples/*.py typed in this shell reaches."""
    return os.environ.get("TQ_BROKER_URL") or WorkerSettings().broker_url


def tries(url: str, modules: Sequence[str], cmds: Commands, cwd: Path) -> list[str]:
    """Commands that work as typed in ``cwd`` against this broker and these workers."""
    implicit = url == typed_url()
    tq = cmds.tq if implicit else f"{cmds.tq} --url {url}"
    lines = []
    if RAW_EXAMPLES in modules:
        lines.append(f"{tq} submit echo '{{\"x\": 1}}' --wait")
    lines += [f"{tq} stats", f"{tq} workers"]
    if TYPED_EXAMPLES in modules and (cwd / QUICKSTART).is_file():
        env = "" if implicit else f"TQ_BROKER_URL={url} "
        lines.append(f"{env}{cmds.python} {QUICKSTART}")
    if cmds.activate is not None:
        lines.append(f"(or `{cmds.activate}` first, then type tq and python)")
    return lines


def render(
    settings: Settings,
    url: str,
    ports: Mapping[str, int],
    modules: Sequence[str],
    pids: tuple[int, Sequence[int]],
    cwd: Path,
    cmds: Commands,
) -> str:
    """The whole banner; ``pids`` are the broker's and the workers'."""
    broker_pid, worker_pids = pids
    served = ", ".join(modules)
    queues = ", ".join(settings.worker.queues)
    lines = [f"tq dev: broker (pid {broker_pid}), data in {settings.persistence.data_dir}"]
    lines += [f"        worker (pid {pid}) of {served}; queues {queues}" for pid in worker_pids]
    lines += [f"  {what:<10} {where}" for what, where in addresses(settings, url, ports)]
    for i, line in enumerate(tries(url, modules, cmds, cwd)):
        lines.append(f"  {'try:' if i == 0 else '':<10} {line}")
    lines.append(f"  {'stop:':<10} Ctrl-C")
    return "\n".join(lines)
