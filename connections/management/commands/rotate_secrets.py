"""Re-encrypt every stored connection secret and token with the newest encryption key."""

import json

from django.core.management.base import BaseCommand, CommandError

from connections import crypto, services

MSG_ROTATED = "Re-encrypted {count} connection(s)."


class Command(BaseCommand):
    help = (
        "Re-encrypt connection secrets with the first key of STAGEMAP_ENCRYPTION_KEY. "
        "Put the new key first, keep the old ones after it, run this, then drop the old keys."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true")

    def handle(self, *args, **options):
        try:
            count = services.connection_rotate_secrets()
        except crypto.SecretsUnreadable as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps({"re_encrypted": count}, indent=2))
            return
        self.stdout.write(self.style.SUCCESS(MSG_ROTATED.format(count=count)))
