"""Command line: `python -m salesforce_emulator serve --data-dir DIR [--seed demo] [--size N]`,
and `python -m salesforce_emulator set --data-dir DIR Lead ID Status=VALUE` to change a record of
the emulator serving DIR."""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import sys
import threading
import urllib.error
import urllib.request
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
    serve.add_argument("--page-delay", type=float, default=0.0, metavar="SECONDS",
                       help="sleep this long before each query/queryMore page, as a real org "
                       "takes (e.g. 0.4); default 0")
    change = commands.add_parser(
        "set", help="change fields of a record in a running emulator (as a Salesforce user would)"
    )
    change.add_argument("--data-dir", type=Path, required=True,
                        help="the data dir of the running emulator (its credentials.json)")
    change.add_argument("sobject", help="e.g. Lead")
    change.add_argument("record_id")
    change.add_argument("assignments", nargs="+", metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    if args.command == "set":
        return _set(parser, args)
    if args.page_delay < 0:
        parser.error("--page-delay must be 0 or more seconds")

    server = EmulatorServer(args.data_dir, seed=args.seed, size=args.size, host=args.host,
                            port=args.port, token_ttl_seconds=args.token_ttl,
                            api_daily_limit=args.api_limit, page_delay=args.page_delay)
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


def _set(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """POST one update_record to the control endpoint of the emulator serving `--data-dir`."""
    fields = {}
    for assignment in args.assignments:
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            parser.error(f"{assignment!r} is not FIELD=VALUE")
        fields[name] = value
    try:
        creds = json.loads((args.data_dir / "credentials.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"No running emulator's credentials in {args.data_dir}: {exc}", file=sys.stderr)
        return 1
    body = json.dumps({"sobject": args.sobject, "record_id": args.record_id, "fields": fields})
    request = urllib.request.Request(
        f"{creds['instance_url']}/_emulator/update_record", data=body.encode(), method="POST",
        headers={"Content-Type": "application/json",
                 creds["control_header"]: creds["control_token"]},
    )
    context = ssl.create_default_context(cafile=creds["ca_path"])
    try:
        with urllib.request.urlopen(request, context=context, timeout=30):
            pass
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        print(f"The emulator refused: {detail}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"The emulator at {creds['instance_url']} did not answer: {exc}", file=sys.stderr)
        return 1
    changes = ", ".join(f"{name} = {value!r}" for name, value in fields.items())
    print(f"{args.sobject} {args.record_id}: {changes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
