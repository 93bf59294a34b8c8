"""A standalone HTTPS emulator of the Salesforce REST API subset stagemap uses."""

__all__ = ["EmulatorServer", "Org"]


def __getattr__(name: str) -> object:
    # Lazy so `python -m salesforce_emulator` and the pytest plugin import only what they use.
    if name == "EmulatorServer":
        from salesforce_emulator.server import EmulatorServer

        return EmulatorServer
    if name == "Org":
        from salesforce_emulator.org import Org

        return Org
    raise AttributeError(name)
