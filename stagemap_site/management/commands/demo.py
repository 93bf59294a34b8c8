"""`make demo`: set everything up and serve the admin on 127.0.0.1:8000."""

import os
import secrets

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

DEMO_USERNAME = "admin"


class Command(BaseCommand):
    help = "Migrate, create the demo superuser and serve the admin."

    def add_arguments(self, parser):
        parser.add_argument("--addrport", default="127.0.0.1:8000")
        parser.add_argument(
            "--no-serve", action="store_true", help="Set everything up, then exit."
        )

    def handle(self, *args, addrport, no_serve, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write("Database migrated.")
        self._ensure_superuser()
        if no_serve:
            return
        self.stdout.write(self.style.SUCCESS(f"Admin: http://{addrport}/admin/"))
        call_command("runserver", addrport, use_reloader=False)

    def _ensure_superuser(self) -> None:
        User = get_user_model()
        password = os.environ.get("STAGEMAP_DEMO_PASSWORD", "")
        user = User.objects.filter(username=DEMO_USERNAME).first()
        if user and not password:
            self.stdout.write(f"Superuser '{DEMO_USERNAME}' exists (password unchanged).")
            return
        # The demo password is shown once on purpose: it guards a local demo, not an org.
        password = password or secrets.token_urlsafe(12)
        if user is None:
            User.objects.create_superuser(DEMO_USERNAME, "admin@example.com", password)
        else:
            user.set_password(password)
            user.save(update_fields=["password"])
        self.stdout.write(
            self.style.SUCCESS(f"Superuser: user '{DEMO_USERNAME}', password '{password}'")
        )
