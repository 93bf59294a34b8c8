"""The browser tests' Chromium setup: it installs only when it may, and says why it did not."""

import os
import stat

from tests.browser.chromium import APT_FAILED, NO_ROOT, STILL_MISSING, chromium_install


def _fake_apt(folder, *, code: int, message: str = ""):
    """An apt-get on PATH that logs its arguments and exits with `code`."""
    log = folder / "apt.log"
    script = folder / "apt-get"
    script.write_text(
        f'#!/bin/sh\necho "$@" >> {log}\necho "{message}" >&2\nexit {code}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return log


def test_a_present_chromium_is_left_alone(tmp_path, monkeypatch):
    present = tmp_path / "chromium"
    present.touch()
    log = _fake_apt(tmp_path, code=0)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")

    assert chromium_install(path=present, say=print) is None
    assert not log.exists()


def test_without_root_or_sudo_nothing_runs_and_the_reason_is_given(tmp_path, monkeypatch):
    missing = tmp_path / "chromium"
    log = _fake_apt(tmp_path, code=0)
    monkeypatch.setenv("PATH", str(tmp_path))  # apt-get, but no sudo
    monkeypatch.setattr(os, "geteuid", lambda: 1000)

    assert chromium_install(path=missing, say=print) == NO_ROOT.format(path=missing)
    assert not log.exists()


def test_a_failing_apt_get_is_the_reason(tmp_path, monkeypatch):
    missing = tmp_path / "chromium"
    log = _fake_apt(tmp_path, code=100, message="E: Unable to locate package chromium")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    said = []

    reason = chromium_install(path=missing, say=said.append)

    assert reason == APT_FAILED.format(
        command="apt-get update -q", code=100, message="E: Unable to locate package chromium"
    )
    assert log.read_text().splitlines() == ["update -q"]
    assert said and str(missing) in said[0]


def test_an_install_that_leaves_no_chromium_is_the_reason(tmp_path, monkeypatch):
    missing = tmp_path / "chromium"
    log = _fake_apt(tmp_path, code=0)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setattr(os, "geteuid", lambda: 0)

    assert chromium_install(path=missing, say=print) == STILL_MISSING.format(path=missing)
    assert log.read_text().splitlines() == ["update -q", "install -y -q chromium"]
