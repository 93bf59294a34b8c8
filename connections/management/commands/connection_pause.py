"""Pause a connection: no Salesforce call is made for it until it is resumed."""

from connections import services
from connections.management.commands._pausing import ERR_MISSING, PauseCommand

__all__ = ["ERR_MISSING", "MSG_ALREADY_PAUSED", "MSG_PAUSED", "Command"]

MSG_PAUSED = "{name}: paused; no Salesforce call is made until `manage.py connection_resume`."
MSG_ALREADY_PAUSED = "{name} is already paused; nothing changed."


class Command(PauseCommand):
    help = "Pause a Salesforce connection (syncs, pushes and refreshes stop until resumed)."
    wanted_paused = True
    msg_done = MSG_PAUSED
    msg_nothing = MSG_ALREADY_PAUSED

    def change(self, connection):
        return services.connection_pause(connection=connection)
