"""Command line: `python -m salesforce_emulator serve --data-dir DIR [--seed demo] [--size N]`."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from salesforce_emulator.seed import SEEDS
from salesforce_emulator.server import EmulatorServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m salesforce_emulator",
                                     description="A Salesforce REST API emulator over HTTPS.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve an emulated org until stopped")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--data-dir", type=Path, required=True,
                       help="keeps the CA, credentials and the org between runs")
    serve.add_argument("--seed", choices=SEEDS, default="demo")
    serve.add_argument("--size", type=int, default=None, help="number of leads to generate")
    serve.add_argument("--token-ttl", type=float, default=7200, help="access token seconds")
    serve.add_argument("--api-limit", type=int, default=15000, help="daily API request limit")
    args = parser.parse_args(argv)

    server = EmulatorServer(args.data_dir, seed=args.seed, size=args.size, host=args.host,
                            port=args.port, token_ttl_seconds=args.token_ttl,
                            api_daily_limit=args.api_limit)
    server.start()
    creds = server.credentials
    origin = "restored from" if server.loaded_from_disk else "seeded into"
    print(f"Salesforce emulator: org {creds.org_id} {origin} {args.data_dir}", flush=True)
    print(f"  instance URL: {server.instance_url}")
    print(f"  login URL:    {server.login_url}")
    print(f"  CA bundle:    {server.ca_path}")
    print(f"  username:     {creds.username}")
    print(f"  consumer key: {creds.consumer_key}")
    print(f"  secrets, private key and control token: {server.credentials_path}")
    print("Serving; stop with Ctrl-C or SIGTERM.", flush=True)

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
    server.stop()
    print("Emulator stopped; org saved.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
