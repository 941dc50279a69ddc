#!/usr/bin/env python3
"""Run this repository's nox sessions from a private virtualenv: ``python3 scripts/run_nox.py -s tests``.

Every argument goes to nox unchanged. The first run makes ``.venv-nox/`` beside ``noxfile.py`` and installs
nox into it; later runs reuse it. Nothing is installed into the Python that runs this script, so it works
where that Python refuses ``pip install`` (PEP 668: "externally-managed-environment", as on Debian 12 and
Ubuntu 24.04). Where the ``venv`` module cannot install pip (Debian without ``python3-venv``), the system's
pip installs nox into the virtualenv instead (``pip --python``); with neither, it says what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = ROOT / ".venv-nox"
NOX = "nox>=2024.4.15"  # keep in step with nox.needs_version in noxfile.py


def _python(env_dir: Path) -> Path:
    return env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _quiet(*args: str) -> bool:
    return subprocess.call(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0


def _make_env() -> bool:
    """Create ``ENV_DIR`` with nox in it; False (having said why) when this machine cannot."""
    shutil.rmtree(ENV_DIR, ignore_errors=True)
    python = str(_python(ENV_DIR))
    pip_env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    try:
        venv.create(ENV_DIR, with_pip=True)
        installer = [python, "-m", "pip"]
    except (subprocess.CalledProcessError, OSError):
        shutil.rmtree(ENV_DIR, ignore_errors=True)
        venv.create(ENV_DIR, with_pip=False)
        if not _quiet(sys.executable, "-m", "pip", "--version"):
            print(
                "Cannot set up nox: this Python has neither a working `venv` with pip (Debian/Ubuntu: "
                "`apt install python3-venv`) nor pip (`apt install python3-pip`).",
                file=sys.stderr,
            )
            return False
        installer = [sys.executable, "-m", "pip", "--python", python]
    print(f"Installing {NOX} into {ENV_DIR.relative_to(ROOT)}/ ...", file=sys.stderr)
    if subprocess.call([*installer, "install", "--quiet", NOX], env=pip_env) != 0:
        print("Installing nox failed (see above).", file=sys.stderr)
        return False
    return True


def main(argv: list[str]) -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 (this script may be run by any python3)
        print(f"Python 3.10 or newer is needed; this is {sys.version.split()[0]}.", file=sys.stderr)
        return 2
    python = _python(ENV_DIR)
    if not (python.exists() and _quiet(str(python), "-c", "import nox")) and not _make_env():
        return 1
    return subprocess.call([str(python), "-m", "nox", "--noxfile", str(ROOT / "noxfile.py"), *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
