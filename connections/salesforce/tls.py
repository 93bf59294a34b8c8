"""The HTTP session every Salesforce request goes through: our CA trust and timeouts."""

from __future__ import annotations

import atexit
import os
import ssl
import tempfile
import threading
from pathlib import Path
from typing import Any

import certifi
import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.util.ssl_ import create_urllib3_context

from connections.salesforce.errors import CODE_TLS, ERR_CA_BUNDLE_MISSING, SalesforceError

_bundle_lock = threading.Lock()
_bundle_cache: dict[tuple, str] = {}
_context_cache: dict[str, ssl.SSLContext] = {}


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


def _context_for(bundle: str) -> ssl.SSLContext:
    """One TLS context per bundle, its roots loaded once: every run opens a new session, and
    loading certifi's roots into each new connection cost more than the run's own calls."""
    with _bundle_lock:
        context = _context_cache.get(bundle)
        if context is None:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            context.load_verify_locations(cafile=bundle)
            _context_cache[bundle] = context
        return context


class TrustingAdapter(HTTPAdapter):
    """Forces our CA bundle (requests lets REQUESTS_CA_BUNDLE override Session.verify) and a
    default timeout; certificate checks are never turned off."""

    def __init__(self, *, verify: str | None, timeout: float, **kwargs: Any) -> None:
        self.forced_verify = verify
        self.context = _context_for(verify) if verify is not None else None
        self.default_timeout = timeout
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **pool_kwargs: Any) -> None:
        if self.context is not None:
            pool_kwargs["ssl_context"] = self.context
        super().init_poolmanager(*args, **pool_kwargs)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any):
        if self.context is not None:
            proxy_kwargs.setdefault("ssl_context", self.context)
        return super().proxy_manager_for(proxy, **proxy_kwargs)

    def cert_verify(self, conn, url, verify, cert) -> None:
        super().cert_verify(conn, url, verify, cert)
        if self.context is not None:
            # The context holds the bundle already; a path here would load it again.
            conn.ca_certs = conn.ca_cert_dir = None

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        if self.context is not None:
            verify = True  # checked against self.context's roots, never turned off
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
