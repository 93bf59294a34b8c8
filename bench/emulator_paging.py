"""Benchmark: page N emulated leads through simple-salesforce `query_all_iter`, print records/s.

Run: python bench/emulator_paging.py [--size 100000] [--batch-size 2000] [--in-process]
The emulator runs in a subprocess by default (as in the demo), so client and server do not
share one interpreter lock.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import requests
from _emulator import start_emulator, stop_emulator
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce

QUERY = ("SELECT Id, FirstName, LastName, Email, Company, Status, Lifecycle_Stage__c, "
         "IsConverted, RecordTypeId, LastModifiedById, SystemModstamp FROM Lead "
         "ORDER BY SystemModstamp, Id")


class TrustAdapter(HTTPAdapter):
    """Forces the emulator's CA even when REQUESTS_CA_BUNDLE is set in the environment."""

    def __init__(self, ca_path: str) -> None:
        super().__init__()
        self.ca_path = ca_path

    def send(self, request, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["verify"] = self.ca_path
        return super().send(request, **kwargs)


def _client(base_url: str, ca_path: str, key: str, secret: str) -> Salesforce:
    session = requests.Session()
    session.mount(base_url, TrustAdapter(ca_path))
    token = session.post(f"{base_url}/services/oauth2/token",
                         data={"grant_type": "client_credentials"}, auth=(key, secret),
                         timeout=30).json()["access_token"]
    return Salesforce(instance_url=base_url, session_id=token, version="62.0", session=session)


def _page(sf: Salesforce, batch_size: int) -> tuple[int, float]:
    headers = {"Sforce-Query-Options": f"batchSize={batch_size}"}
    started = time.perf_counter()
    count = sum(1 for _ in sf.query_all_iter(QUERY, headers=headers))
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--in-process", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if args.in_process:
            from salesforce_emulator.server import EmulatorServer

            server = EmulatorServer(Path(tmp), size=args.size).start()
            creds = server.credentials
            sf = _client(server.base_url, server.ca_path, creds.consumer_key,
                         creds.consumer_secret)
            proc = None
        else:
            proc, creds_json = start_emulator(args.size, tmp, api_limit=15000)
            sf = _client(creds_json["instance_url"], creds_json["ca_path"],
                         creds_json["consumer_key"], creds_json["consumer_secret"])
        ready = time.perf_counter() - started
        try:
            count, elapsed = _page(sf, args.batch_size)
        finally:
            if proc is not None:
                stop_emulator(proc)
            else:
                server.stop()
    print(f"seed + start ({args.size} leads): {ready:.1f} s")
    print(f"paged {count} records in {elapsed:.2f} s with batchSize={args.batch_size}: "
          f"{count / elapsed:,.0f} records/s")


if __name__ == "__main__":
    main()
