"""Packaging truth: the wheel installs into a fresh venv, and each extra's imports work there.

``pip install 'shax[client]'`` must be enough for ``import shax_client`` (it needs orjson
through ``shax_core.wire``); the base install for ``import shax_core``; ``[server]`` for the
app. Plain ``pytest`` collects the suite as ``python -m pytest`` does. Bounded in time: one
wheel build, one venv per extra (pip reads the machine's package index configuration).
"""

from __future__ import annotations

import subprocess
import sys
import venv

import pytest

import shax_core
from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

CHECKS = {
    "": "import shax_core, shax_core.numpy; print(shax_core.__version__)",
    "client": "import shax_client; print(shax_client.__version__)",
    "server": "import shax_server.app; shax_server.app.create_app(); print('app')",
}


def run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    built = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)]
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (path,) = out.glob("shax-*.whl")
    return path


def test_versions_are_one():
    import shax_client

    assert shax_client.__version__ == shax_core.__version__
    assert shax_core.__version__.count(".") == 2


@pytest.mark.parametrize("extra", sorted(CHECKS), ids=lambda e: e or "base")
def test_each_extra_imports_in_a_fresh_venv(wheel, tmp_path, extra):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    spec = f"{wheel}[{extra}]" if extra else str(wheel)
    installed = run([python, "-m", "pip", "install", "-q", spec])
    if installed.returncode and "No matching distribution" in installed.stderr:
        pytest.skip(f"no package index reachable for the dependencies: {installed.stderr[-300:]}")
    assert installed.returncode == 0, installed.stderr[-2000:]
    # run outside the checkout, so only the installed wheel can be imported
    checked = run([python, "-c", CHECKS[extra]], cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr[-2000:]
    expected = "app" if extra == "server" else shax_core.__version__
    assert checked.stdout.strip() == expected


def test_plain_pytest_collects_like_python_m_pytest():
    files = ["tests/test_demo.py", "tests/test_traits.py", "tests/test_api.py"]
    plain = run([str(ROOT / ".venv" / "bin" / "pytest"), "--collect-only", "-q", *files], cwd=ROOT)
    module = run([sys.executable, "-m", "pytest", "--collect-only", "-q", *files], cwd=ROOT)
    assert module.returncode == 0, module.stdout[-2000:]
    assert plain.returncode == 0, plain.stdout[-2000:]
    assert plain.stdout.splitlines()[:-1] == module.stdout.splitlines()[:-1]
    assert len(plain.stdout.splitlines()) > 20
