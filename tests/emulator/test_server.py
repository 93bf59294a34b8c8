"""Server lifecycle: restart persistence, the CLI, the control endpoint and fast resets."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from salesforce_emulator.server import EmulatorServer
from tests.emulator.sfclient import client, trusted_session

ROOT = Path(__file__).resolve().parents[2]


def test_restart_keeps_the_org(tmp_path):
    with EmulatorServer(tmp_path, size=50) as first:
        creds = first.credentials
        sf = client(first)
        lead = sf.query("SELECT Id, Status FROM Lead WHERE IsConverted = false AND "
                        "Status != 'SQL' AND Status != 'Legacy - Cold' LIMIT 1")["records"][0]
        sf.Lead.update(lead["Id"], {"Status": "SQL"})
        first.org.add_picklist_value("Lead", "Status", "Reborn")
        created = first.org.create_record("Lead", {"LastName": "Kept", "Company": "K"})
        count = sf.query("SELECT COUNT() FROM Lead")["totalSize"]
        token = sf.session_id
    assert (tmp_path / "ca.pem").exists() and (tmp_path / "org.sqlite3").exists()
    with EmulatorServer(tmp_path, size=50) as second:
        assert second.loaded_from_disk
        assert second.credentials.consumer_secret == creds.consumer_secret
        sf = client(second, token)  # a token issued before the restart still works
        assert sf.Lead.get(lead["Id"])["Status"] == "SQL"
        assert sf.Lead.get(created)["LastName"] == "Kept"
        assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == count
        assert "Reborn" in {r["ApiName"] for r in sf.query("SELECT ApiName FROM LeadStatus")[
            "records"]}
        second.org.reset()
    with EmulatorServer(tmp_path, size=50) as third:
        assert third.org.get_record("Lead", lead["Id"])["Status"] == lead["Status"]
        assert created not in {r["Id"] for r in third.org.records("Lead")}


def test_reset_is_fast_and_restores_the_seed(emulator):
    org = emulator.org
    before = org.records("Lead", include_deleted=True)
    org.update_record("Lead", before[0]["Id"], {"Status": "SQL"})
    org.inject_fault(count=5)
    org.deactivate_picklist_value("Lead", "Status", "MQL")
    started = time.perf_counter()
    org.reset()
    assert time.perf_counter() - started < 0.05
    assert org.records("Lead", include_deleted=True) == before
    assert org.take_fault("/services/data/v62.0/query/") is None
    assert org.api_usage[0] == 0 and org.request_log == []


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serve_writes_ca_and_credentials_and_stops_on_sigterm(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "salesforce_emulator", "serve", "--host", "127.0.0.1",
         "--port", str(port), "--data-dir", str(tmp_path), "--seed", "demo", "--size", "40"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Serving"):
                break
        output = "".join(lines)
        assert f"https://127.0.0.1:{port}" in output
        creds = json.loads((tmp_path / "credentials.json").read_text())
        for key in ("consumer_key", "consumer_secret", "username", "password", "security_token",
                    "private_key_pem", "certificate_pem", "control_token", "instance_url"):
            assert creds[key], key
        assert (tmp_path / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
        assert Path(creds["private_key_path"]).read_text() == creds["private_key_pem"]
        session = requests.Session()
        session.verify = creds["ca_path"]
        token = session.post(f"{creds['login_url']}/services/oauth2/token",
                             data={"grant_type": "client_credentials"},
                             auth=(creds["consumer_key"], creds["consumer_secret"]),
                             timeout=10, verify=creds["ca_path"])
        assert token.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "stopped" in rest


def test_control_endpoint(emulator):
    session = trusted_session(emulator)
    url = f"{emulator.base_url}/_emulator"
    headers = {"X-Emulator-Control-Token": emulator.credentials.control_token}

    def call(endpoint, /, **kwargs):
        response = session.post(f"{url}/{endpoint}", json=kwargs, headers=headers, timeout=10)
        return response.status_code, response.json()

    assert session.post(f"{url}/api_usage", json={}, timeout=10).status_code == 401
    assert session.post(f"{url}/api_usage", json={}, timeout=10,
                        headers={"X-Emulator-Control-Token": "wrong"}).status_code == 401
    lead = emulator.org.records("Lead")[0]["Id"]
    original = emulator.org.get_record("Lead", lead)
    assert call("update_record", sobject="Lead", record_id=lead,
                fields={"Status": "SQL"}) == (200, {"result": None})
    assert emulator.org.get_record("Lead", lead)["Status"] == "SQL"
    status, body = call("create_record", sobject="Contact", fields={"LastName": "Ctl"})
    assert status == 200 and body["result"].startswith("003")
    assert call("clock_freeze", dt="2026-01-05T10:11:12Z")[1]["result"].startswith(
        "2026-01-05T10:11:12")
    call("update_record", sobject="Lead", record_id=lead, fields={"Status": "MQL"})
    assert emulator.org.get_record("Lead", lead)["SystemModstamp"] == \
        "2026-01-05T10:11:12.000+0000"
    call("clock_advance", seconds=60)
    assert emulator.org.clock.now().minute == 12
    call("clock_unfreeze")
    call("add_validation_rule_equals", sobject="Lead", name="no_sql", field="Status",
         message="No SQL", value="SQL")
    sf = client(emulator)
    results = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Lead"}, "id": lead, "Status": "SQL"}]})
    assert results[0]["errors"][0]["statusCode"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"
    call("set_api_limit", max=10)
    assert call("api_usage")[1]["result"] == {"used": 1, "max": 10}
    log = call("request_log")[1]["result"]
    assert log[-1]["kind"] == "composite" and log[-1]["status"] == 200
    call("inject_fault", status=503, count=1)
    assert session.get(f"{emulator.base_url}/services/data/v62.0/limits/",
                       timeout=10).status_code == 503
    assert call("no_such_call")[0] == 404
    assert call("update_record", sobject="Nope", record_id=lead, fields={})[0] == 400
    call("reset")
    assert emulator.org.get_record("Lead", lead) == original
    assert emulator.org.validation_rules == []
