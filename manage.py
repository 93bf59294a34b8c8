#!/usr/bin/env python
"""Django's command-line entry point for stagemap."""
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stagemap_site.settings")
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
        # Flushed here so a reader that went away (`| head`) is caught below, not at exit.
        sys.stdout.flush()
    except BrokenPipeError:
        # As the Python docs advise (signal, "Note on SIGPIPE"): nothing more is written, and
        # exit 1 as Python does on EPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
