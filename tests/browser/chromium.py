"""Debian's Chromium for the browser tests: installed with apt-get when missing and allowed."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
APT_TIMEOUT = 900  # seconds a step may take; an install takes about a minute

NO_APT = "{path} is missing and this machine has no apt-get to install it"
NO_ROOT = "{path} is missing and installing it needs root or passwordless sudo"
APT_FAILED = "`{command}` failed ({code}): {message}"
APT_STUCK = "`{command}` did not finish: {error}"
STILL_MISSING = "apt-get installed chromium but {path} is still missing"


def _apt_prefix() -> list[str] | None:
    """How to run apt-get as root here: directly, through passwordless sudo, or not at all."""
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo"):
        probe = subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["sudo", "-n"]
    return None


def chromium_install(*, path: Path = CHROMIUM, say: Callable[[str], None] = print) -> str | None:
    """Install Debian's chromium when `path` is missing. Returns why it is not there when that
    cannot be done, else None. Looks first, so a machine installs it once."""
    if path.exists():
        return None
    if shutil.which("apt-get") is None:
        return NO_APT.format(path=path)
    prefix = _apt_prefix()
    if prefix is None:
        return NO_ROOT.format(path=path)
    say(f"{path} is missing: installing Debian's chromium (about a minute)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # A fresh machine's package lists may be empty or stale: update them before installing.
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        shown = " ".join(command)
        try:
            done = subprocess.run(
                prefix + command, capture_output=True, text=True, env=env,
                timeout=APT_TIMEOUT, check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return APT_STUCK.format(command=shown, error=exc)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            return APT_FAILED.format(command=shown, code=done.returncode, message=last)
    if not path.exists():
        return STILL_MISSING.format(path=path)
    return None
