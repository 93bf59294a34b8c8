"""The emulator in a subprocess for the benchmarks (its own interpreter lock, as a remote org)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator(
    size: int, data_dir: str, *, api_limit: int = 10_000_000, page_delay: float = 0.0
) -> tuple[subprocess.Popen, dict]:
    """Serve `size` seeded leads from `data_dir`; (process, credentials.json) once it serves."""
    command = [
        sys.executable, "-m", "salesforce_emulator", "serve", "--port", str(free_port()),
        "--data-dir", data_dir, "--size", str(size), "--api-limit", str(api_limit),
    ]
    if page_delay:
        command += ["--page-delay", str(page_delay)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("Serving"):
            break
    else:
        raise SystemExit(f"the emulator exited with {proc.wait()} before serving")
    return proc, json.loads((Path(data_dir) / "credentials.json").read_text())


def stop_emulator(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=120)


class Control:
    """The emulator's /_emulator/ control endpoint, over one kept-alive session."""

    def __init__(self, creds: dict) -> None:
        self.base = creds["instance_url"].rstrip("/") + "/_emulator/"
        self.session = requests.Session()
        self.session.headers[creds["control_header"]] = creds["control_token"]
        # Per request: a session's own `verify` loses to REQUESTS_CA_BUNDLE from the environment.
        self.verify = creds["ca_path"]

    def __call__(self, name: str, **kwargs):
        response = self.session.post(self.base + name, json=kwargs, verify=self.verify,
                                     timeout=120)
        response.raise_for_status()
        body = response.json()
        return body.get("result", body) if isinstance(body, dict) else body
