"""`make demo`: emulated org, migrate, connect, map, sync, and serve the admin."""

import contextlib
import json
import os
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

DEMO_USERNAME = "admin"
DEMO_CONNECTION = "Demo org (emulated)"
EMULATOR_START_TIMEOUT = 120
# What an ops person would map by hand in the demo org; a few values stay unmapped on purpose,
# so the demo shows the unmapped workflow. Auto-map then handles the standard statuses.
DEMO_MAPPINGS = {
    "Status": {"MQL": "in_progress", "SQL": "in_progress", "Nurturing": "contacted",
               "Disqualified": "lost"},
    "Lifecycle_Stage__c": {"Subscriber": "new", "Lead": "new", "MQL": "contacted",
                           "SQL": "in_progress", "Customer": "converted", "Churned": "lost"},
}


class Command(BaseCommand):
    help = (
        "Start the Salesforce emulator, migrate, create the demo superuser, connect to the "
        "emulated org, refresh and auto-map its picklists, sync, start a worker, serve the admin."
    )

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument("--data-dir", default=str(settings.BASE_DIR / "var" / "emulator"))
        parser.add_argument("--emulator-port", type=int, default=8443)
        parser.add_argument("--no-serve", action="store_true", help="Set up and sync, then exit.")
        parser.add_argument("--no-worker", action="store_true", help="Do not start qcluster.")

    def handle(self, *args, addrport, data_dir, emulator_port, no_serve, no_worker, **options):
        children: list[subprocess.Popen] = []
        # SIGTERM ends the demo like Ctrl-C does, so the emulator and the worker stop with it.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            call_command("migrate", interactive=False, verbosity=0)
            self.stdout.write("Database migrated.")
            user = self._ensure_superuser()
            emulator, creds = self._start_emulator(Path(data_dir), emulator_port)
            if emulator is not None:
                children.append(emulator)
            # The emulator's private CA is trusted for this process and for the worker.
            settings.STAGEMAP_SALESFORCE_CA_BUNDLE = creds["ca_path"]
            os.environ["STAGEMAP_SALESFORCE_CA_BUNDLE"] = creds["ca_path"]
            connection = self._ensure_connection(creds, user)
            self._map_and_sync(connection, user)
            call_command("setup_schedules", stdout=self.stdout)
            tips = demo_tips(connection=connection, data_dir=Path(data_dir))
            if no_serve:
                self.stdout.write(tips.text)
                return
            if not no_worker:
                children.append(self._start_worker())
            self.stdout.write(self.style.SUCCESS(f"Admin: http://{addrport}/admin/"))
            self.stdout.write(tips.text)
            call_command("runserver", addrport, use_reloader=False)
        finally:
            for child in reversed(children):
                child.terminate()
            for child in children:
                try:
                    child.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    child.kill()

    def _ensure_superuser(self):
        User = get_user_model()
        password = os.environ.get("STAGEMAP_DEMO_PASSWORD", "")
        user = User.objects.filter(username=DEMO_USERNAME).first()
        if user and not password:
            self.stdout.write(f"Superuser '{DEMO_USERNAME}' exists (password unchanged).")
            return user
        # The demo password is shown once on purpose: it guards a local demo, not an org.
        password = password or secrets.token_urlsafe(12)
        if user is None:
            user = User.objects.create_superuser(DEMO_USERNAME, "admin@example.com", password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        self.stdout.write(
            self.style.SUCCESS(f"Superuser: user '{DEMO_USERNAME}', password '{password}'")
        )
        return user

    def _start_emulator(self, data_dir: Path, port: int):
        """Start the emulator (or reuse one already serving this data dir) and read its
        credentials file."""
        data_dir.mkdir(parents=True, exist_ok=True)
        creds_path = data_dir / "credentials.json"
        if port and creds_path.exists() and _port_open(port):
            creds = json.loads(creds_path.read_text())
            if creds["instance_url"].endswith(f":{port}"):
                self.stdout.write(f"Reusing the emulator at {creds['instance_url']}.")
                return None, creds
            raise CommandError(f"Port {port} is taken by another program: use --emulator-port.")
        started = time.time()
        log = open(data_dir / "emulator.log", "ab")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            [sys.executable, "-m", "salesforce_emulator", "serve", "--data-dir", str(data_dir),
             "--port", str(port), "--seed", "demo"],
            cwd=settings.BASE_DIR, stdout=log, stderr=subprocess.STDOUT,
        )
        while time.time() - started < EMULATOR_START_TIMEOUT:
            if process.poll() is not None:
                raise CommandError(f"The emulator exited; see {data_dir / 'emulator.log'}.")
            if creds_path.exists() and creds_path.stat().st_mtime >= started - 1:
                creds = json.loads(creds_path.read_text())
                if _port_open(int(creds["instance_url"].rsplit(":", 1)[1])):
                    self.stdout.write(f"Salesforce emulator serving at {creds['instance_url']}.")
                    return process, creds
            time.sleep(0.2)
        process.terminate()
        raise CommandError("The emulator did not start within two minutes.")

    def _ensure_connection(self, creds: dict, user):
        from connections.models import Connection
        from connections.services import connection_create, connection_test, connection_update

        secrets_ = {"private_key": Path(creds["private_key_path"]).read_text()}
        connection = Connection.objects.filter(name=DEMO_CONNECTION).first()
        if connection is None:
            connection = connection_create(
                name=DEMO_CONNECTION, auth_method=Connection.AuthMethod.JWT,
                login_url=creds["login_url"], consumer_key=creds["consumer_key"],
                username=creds["username"], secrets=secrets_, acting_user=user,
            )
        else:
            connection = connection_update(
                connection=connection, secrets=secrets_, acting_user=user,
                login_url=creds["login_url"], consumer_key=creds["consumer_key"],
                username=creds["username"],
            )
        identity = connection_test(connection=connection)
        self.stdout.write(
            f"Connected '{connection.name}' (JWT bearer): org {identity.org_id}, "
            f"user {identity.username}."
        )
        return connection

    def _map_and_sync(self, connection, user) -> None:
        from mappings.models import FieldMapping, PicklistValue, Stage
        from mappings.services.automap import field_mappings_automap
        from mappings.services.fields import field_mapping_create
        from mappings.services.refresh import picklist_refresh
        from mappings.services.values import picklist_value_set_mapping
        from sync.services.inbound import sync_run_inbound

        if not FieldMapping.objects.filter(
            connection=connection, object_name="Lead", field_name="Lifecycle_Stage__c"
        ).exists():
            field_mapping_create(
                connection=connection, object_name="Lead", field_name="Lifecycle_Stage__c",
                direction=FieldMapping.Direction.OUTBOUND, acting_user=user,
            )
        refresh = picklist_refresh(connection=connection, acting_user=user)
        self.stdout.write(
            f"Picklists refreshed: {refresh.added} new, {refresh.updated} changed, "
            f"{refresh.removed} removed values ({refresh.api_calls} API calls)."
        )
        stages = {stage.key: stage for stage in Stage.objects.all()}
        unmapped = PicklistValue.objects.filter(
            field_mapping__connection=connection, stage__isnull=True
        ).select_related("field_mapping")
        for value in unmapped:
            key = DEMO_MAPPINGS.get(value.field_mapping.field_name, {}).get(value.value)
            if key in stages:
                picklist_value_set_mapping(value=value, stage=stages[key], acting_user=user)
        result = field_mappings_automap(
            field_mappings=FieldMapping.objects.filter(connection=connection, active=True),
            acting_user=user,
        )
        self.stdout.write(
            f"Auto-map: {result.mapped} values mapped, {result.outbound} outbound values chosen, "
            f"{result.skipped} left for you to map."
        )
        for run in sync_run_inbound(connection=connection, trigger="command"):
            self.stdout.write(
                f"{run.get_kind_display()} of {run.object_name}: {run.get_status_display()}, "
                f"{run.fetched} fetched, {run.created} created, {run.unmapped} unmapped, "
                f"{run.api_calls} API calls."
            )

    def _start_worker(self) -> subprocess.Popen:
        self.stdout.write("Starting a django-q2 worker (qcluster).")
        return subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=settings.BASE_DIR, env=os.environ.copy()
        )


@dataclass
class DemoTips:
    text: str
    # The lead the printed command changes, its value now and after, and the stage it moves to.
    lead_id: str = ""
    status: str = ""
    stage_key: str = ""
    command: list[str] = field(default_factory=list)


TIPS = """
What to try, signed in as '{user}':
  1. Map the unmapped values: Field mappings → "{field}" → show "Unmapped ({unmapped})", choose a
     stage for each, Save. Their records take the stage at once.
  2. Move some records: Synced records → tick a few → action "Move to stage…". The push runs
     within a minute; watch Sync runs, and Record errors if Salesforce refuses one.
  3. Change a lead in the emulated org as a sales rep would, then press "Sync now" on the
     connection and watch the lead follow:
       {command}
     Lead {lead} ({name}) moves from {old_stage} to {new_stage}.
  Health (Connections → Health) shows what needs attention.
"""


def demo_tips(*, connection, data_dir: Path) -> DemoTips:
    """What `make demo` suggests, with a real lead and a ready command that changes its Status
    in the emulated org to a value mapped to another stage."""
    from mappings.models import FieldMapping, PicklistValue
    from sync.models import SyncedRecord

    status = FieldMapping.objects.filter(connection=connection, object_name="Lead",
                                         field_name="Status").first()
    if status is None:
        return DemoTips(text="")
    unmapped = status.values.filter(stage__isnull=True, removed_at__isnull=True).count()
    target = (PicklistValue.objects.filter(field_mapping=status, active=True, converted=False,
                                           removed_at__isnull=True, stage__active=True,
                                           stage__key="lost")
              .select_related("stage").first())
    lead = (SyncedRecord.objects.filter(connection=connection, object_name="Lead",
                                        is_deleted=False, is_converted=False,
                                        stage__isnull=False)
            .exclude(stage__key="lost").select_related("stage").order_by("sf_id").first())
    if target is None or lead is None:
        return DemoTips(text=TIPS.split("  3.")[0].format(
            user=DEMO_USERNAME, field=status, unmapped=unmapped))
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(Path.cwd())
    command = [str(python), "-m", "salesforce_emulator", "set", "--data-dir", str(data_dir),
               "Lead", lead.sf_id, f"Status={target.value}"]
    text = TIPS.format(
        user=DEMO_USERNAME, field=status, unmapped=unmapped, command=shlex.join(command),
        lead=lead.sf_id, name=lead.name or "no name", old_stage=lead.stage.name,
        new_stage=target.stage.name,
    )
    return DemoTips(text=text, lead_id=lead.sf_id, status=target.value,
                    stage_key=target.stage.key, command=command)


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
