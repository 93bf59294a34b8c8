"""The HTTP session every Salesforce request goes through: our CA trust and timeouts."""

from __future__ import annotations

import atexit
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import certifi
import requests
from django.conf import settings
from requests.adapters import HTTPAdapter

from connections.salesforce.errors import CODE_TLS, ERR_CA_BUNDLE_MISSING, SalesforceError

_bundle_lock = threading.Lock()
_bundle_cache: dict[tuple, str] = {}


def _remove_bundles() -> None:
    for path in _bundle_cache.values():
        Path(path).unlink(missing_ok=True)


atexit.register(_remove_bundles)


def _forced_verify() -> str | None:
    """The CA bundle every Salesforce request must use, or None to keep requests' own choice.

    With an extra CA configured, it is appended to certifi's roots and to any bundle the
    environment points requests at, so neither real orgs nor a corporate proxy stop working.
    """
    extra = getattr(settings, "STAGEMAP_SALESFORCE_CA_BUNDLE", "") or ""
    if not extra:
        return None
    if not os.path.isfile(extra):
        raise SalesforceError(ERR_CA_BUNDLE_MISSING, code=CODE_TLS)
    sources = [certifi.where()]
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        candidate = os.environ.get(variable, "")
        if candidate and os.path.isfile(candidate) and candidate not in sources:
            sources.append(candidate)
    sources.append(extra)
    key = tuple((source, os.path.getmtime(source)) for source in sources)
    with _bundle_lock:
        cached = _bundle_cache.get(key)
        if cached and os.path.isfile(cached):
            return cached
        handle = tempfile.NamedTemporaryFile(
            "wb", prefix="stagemap-ca-", suffix=".pem", delete=False
        )
        with handle:
            for source in sources:
                handle.write(Path(source).read_bytes().rstrip(b"\n") + b"\n")
        _bundle_cache[key] = handle.name
        return handle.name


class TrustingAdapter(HTTPAdapter):
    """Forces our CA bundle (requests lets REQUESTS_CA_BUNDLE override Session.verify) and a
    default timeout; certificate checks are never turned off."""

    def __init__(self, *, verify: str | None, timeout: float, **kwargs: Any) -> None:
        self.forced_verify = verify
        self.default_timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        if self.forced_verify is not None:
            verify = self.forced_verify
        elif verify is False:
            verify = True
        if timeout is None:
            timeout = self.default_timeout
        return super().send(
            request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies
        )


def new_http_session() -> requests.Session:
    """A requests session for Salesforce: our CA trust, timeouts; environment proxies kept."""
    session = requests.Session()
    adapter = TrustingAdapter(
        verify=_forced_verify(), timeout=float(settings.STAGEMAP_SALESFORCE_TIMEOUT)
    )
    session.mount("https://", adapter)
    return session
