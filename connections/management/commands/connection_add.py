"""Add (or with --update, change) a Salesforce connection; secrets only from env vars or files."""

import json
import os
from datetime import date
from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from connections import selectors, services
from connections.models import Connection

ERR_EXISTS = "A connection named {name!r} already exists; pass --update to change it."
ERR_MISSING = "No connection named {name!r}."
ERR_AUTH_REQUIRED = "--auth is required when adding a connection."
ERR_ENV_UNSET = "Environment variable {var} is not set or empty."
ERR_FILE_UNREADABLE = "Cannot read {path}: {reason}."
ERR_TWO_SOURCES = "Give --{option}-env or --{option}-file, not both."
ERR_INVALID = "Refused: {errors}"
MSG_CREATED = (
    "Created connection {name!r} ({method}, {login_url}). Status: never connected; "
    "run `manage.py connection_test {name}`."
)
MSG_UPDATED = "Updated connection {name!r} ({method}). Status: {status}."
MSG_MAPPED = "Mapped: {fields}; add more with `manage.py field_add {name} --field …`."
MSG_NOT_MAPPED = "No field mapped; add one with `manage.py field_add {name} --field …`."

SECRET_OPTIONS = {
    "consumer_secret": "consumer-secret",
    "password": "password",
    "security_token": "security-token",
    "access_token": "access-token",
    "refresh_token": "refresh-token",
    "private_key": "private-key",
}


def _read_file(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CommandError(ERR_FILE_UNREADABLE.format(path=path, reason=exc.strerror)) from None


def _validation_text(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items()
        )
    return " ".join(exc.messages)


class Command(BaseCommand):
    help = (
        "Add a Salesforce connection. Secrets are read from environment variables "
        "(--consumer-secret-env VAR) or files (--private-key-file PATH), never from the "
        "command line."
    )

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--auth", choices=[c for c, _ in Connection.AuthMethod.choices])
        parser.add_argument("--login-url")
        parser.add_argument("--environment", choices=[c for c, _ in
                                                      Connection.Environment.choices])
        parser.add_argument("--consumer-key")
        parser.add_argument("--username")
        parser.add_argument("--instance-url")
        parser.add_argument("--api-version")
        parser.add_argument("--api-budget", type=int, metavar="PCT")
        parser.add_argument("--replication-start-date", type=date.fromisoformat,
                            metavar="YYYY-MM-DD")
        for option in SECRET_OPTIONS.values():
            parser.add_argument(f"--{option}-env", metavar="VAR",
                                help=f"environment variable holding the {option}")
            parser.add_argument(f"--{option}-file", metavar="PATH",
                                help=f"file holding the {option}")
        parser.add_argument("--update", action="store_true",
                            help="change an existing connection instead of refusing")
        parser.add_argument(
            "--no-default-field",
            action="store_true",
            help="Leave a new connection without fields (by default Lead.Status, both ways).",
        )
        parser.add_argument("--json", action="store_true")

    def _secrets(self, options) -> dict[str, str]:
        secrets = {}
        for secret, option in SECRET_OPTIONS.items():
            key = option.replace("-", "_")
            var, path = options.get(f"{key}_env"), options.get(f"{key}_file")
            if var and path:
                raise CommandError(ERR_TWO_SOURCES.format(option=option))
            if var:
                value = os.environ.get(var, "")
                if not value:
                    raise CommandError(ERR_ENV_UNSET.format(var=var))
                secrets[secret] = value
            elif path:
                secrets[secret] = _read_file(path)
        return secrets

    def handle(self, *args, **options):
        name = options["name"]
        secrets = self._secrets(options)
        existing = Connection.objects.filter(name=name).first()
        fields = {
            "login_url": options["login_url"],
            "environment": options["environment"],
            "consumer_key": options["consumer_key"],
            "username": options["username"],
            "instance_url": options["instance_url"],
            "api_version": options["api_version"],
            "api_budget_percent": options["api_budget"],
            "replication_start_date": options["replication_start_date"],
        }
        given = {k: v for k, v in fields.items() if v is not None}
        try:
            if existing is not None:
                if not options["update"]:
                    raise CommandError(ERR_EXISTS.format(name=name))
                if options["auth"]:
                    given["auth_method"] = options["auth"]
                connection = services.connection_update(
                    connection=existing, secrets=secrets, **given
                )
                message = MSG_UPDATED.format(
                    name=name, method=connection.get_auth_method_display(),
                    status=connection.get_status_display(),
                )
            else:
                if not options["auth"]:
                    raise CommandError(ERR_AUTH_REQUIRED)
                given.setdefault("login_url", "")
                connection = services.connection_create(
                    name=name,
                    auth_method=options["auth"],
                    secrets=secrets,
                    default_fields=not options["no_default_field"],
                    **given,
                )
                message = MSG_CREATED.format(
                    name=name, method=connection.get_auth_method_display(),
                    login_url=connection.login_url,
                )
        except ValidationError as exc:
            raise CommandError(ERR_INVALID.format(errors=_validation_text(exc))) from None
        # The fields the apps above map for it, through the relation they attach.
        fields = [
            f"{fm.object_name}.{fm.field_name} ({fm.direction})"
            for fm in connection.field_mappings.order_by("object_name", "field_name")
        ]
        if options["json"]:
            summary = selectors.connection_summary(connection=connection)
            self.stdout.write(json.dumps({**summary, "fields": fields}, indent=2))
        else:
            self.stdout.write(self.style.SUCCESS(message))
            self.stdout.write(
                MSG_MAPPED.format(fields=", ".join(fields), name=name)
                if fields
                else MSG_NOT_MAPPED.format(name=name)
            )
