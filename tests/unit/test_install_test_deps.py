"""scripts/install-test-deps (run by ``make test``, never by ``make run``): where it cannot
install, it says so in one line and succeeds, so ``make test`` goes on and those tests skip.

Each case runs the script with a PATH of our own making: real bash, and stand-ins for the
system tools whose presence is the point (apt-get that records being called, id, promtool).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-test-deps"


def tools(tmp_path: Path, **scripts: str) -> Path:
    """A bin dir holding bash and a stand-in script for each name given."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    bash = shutil.which("bash")
    assert bash is not None
    (bindir / "bash").symlink_to(bash)
    for name, body in scripts.items():
        path = bindir / name.replace("_", "-")
        path.write_text(f"#!{bash}\n{body}\n")
        path.chmod(0o755)
    return bindir


def run(bindir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), "prometheus"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(bindir)},
        check=False,
    )


def apt_get_calls(tmp_path: Path) -> str:
    """A stand-in apt-get that only records its arguments."""
    return f'echo "$@" >> {tmp_path / "apt-get.calls"}'


def test_without_apt_get_it_says_so_in_one_line_and_succeeds(tmp_path: Path) -> None:
    done = run(tools(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == (
        "install-test-deps: not installing prometheus (apt-get not found): "
        "the tests that use promtool will skip\n"
    )


def test_as_a_user_without_sudo_it_says_so_and_never_calls_apt_get(tmp_path: Path) -> None:
    done = run(tools(tmp_path, apt_get=apt_get_calls(tmp_path), id="echo 1000"))
    assert done.returncode == 0, done.stderr
    assert done.stderr == (
        "install-test-deps: not installing prometheus (not root and sudo not found): "
        "the tests that use promtool will skip\n"
    )
    assert not (tmp_path / "apt-get.calls").exists()


def test_a_tool_already_on_path_is_not_installed_again(tmp_path: Path) -> None:
    done = run(tools(tmp_path, apt_get=apt_get_calls(tmp_path), id="echo 0", promtool="true"))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert not (tmp_path / "apt-get.calls").exists()


def test_as_root_with_apt_get_it_installs_the_package_without_recommends(tmp_path: Path) -> None:
    done = run(tools(tmp_path, apt_get=apt_get_calls(tmp_path), id="echo 0"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "apt-get.calls").read_text().splitlines() == [
        "update -qq",
        "install -y -qq --no-install-recommends prometheus",
    ]


def dry_run(target: str, tmp_path: Path) -> str:
    """What ``make -n TARGET`` would run in a fresh checkout (no .venv yet)."""
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "pyproject.toml").touch()
    done = subprocess.run(
        ["make", "-n", target], cwd=tmp_path, capture_output=True, text=True, timeout=30,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_only_make_test_would_install_the_test_tools(tmp_path: Path) -> None:
    """Fast; test_first_steps runs `make run` itself with apt-get hidden."""
    assert "scripts/install-test-deps prometheus" in dry_run("test", tmp_path)
    for target in ("run", "check", "bench"):
        assert "install-test-deps" not in dry_run(target, tmp_path), target
    assert ".[server]" in dry_run("run", tmp_path)
    assert "dev]" not in dry_run("run", tmp_path)
