"""Re-encrypt every stored connection secret and token with the newest encryption key."""

from django.core.management.base import BaseCommand, CommandError

from connections import crypto, services


class Command(BaseCommand):
    help = (
        "Re-encrypt connection secrets with the first key of STAGEMAP_ENCRYPTION_KEY. "
        "Put the new key first, keep the old ones after it, run this, then drop the old keys."
    )

    def handle(self, *args, **options):
        try:
            count = services.connection_rotate_secrets()
        except crypto.SecretsUnreadable as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"Re-encrypted {count} connection(s)."))
