"""Resume a paused connection: it returns to the status it had when paused."""

from connections import services
from connections.management.commands._pausing import ERR_MISSING, PauseCommand

__all__ = ["ERR_MISSING", "MSG_NOT_PAUSED", "MSG_RESUMED", "Command"]

MSG_RESUMED = "{name}: resumed (status: {status})."
MSG_NOT_PAUSED = "{name} is not paused (status: {status}); nothing changed."


class Command(PauseCommand):
    help = "Resume a paused Salesforce connection."
    wanted_paused = False
    msg_done = MSG_RESUMED
    msg_nothing = MSG_NOT_PAUSED

    def change(self, connection):
        return services.connection_resume(connection=connection)
