"""WSGI entry point (gunicorn stagemap_site.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stagemap_site.settings")
application = get_wsgi_application()
