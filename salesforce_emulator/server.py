"""The HTTPS server: routing of Salesforce REST paths, faults, limits, and EmulatorServer."""

from __future__ import annotations

import base64
import json
import re
import socket
import ssl
import tempfile
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

from salesforce_emulator import auth, control, seed
from salesforce_emulator.certs import ensure_tls
from salesforce_emulator.clock import Clock
from salesforce_emulator.errors import ApiError, invalid_session, not_found
from salesforce_emulator.org import NO_BODY, Org
from salesforce_emulator.persist import Store
from salesforce_emulator.rest import RestApi
from salesforce_emulator.state import OrgState

VERSION_PATH = re.compile(r"^/services/data/v(\d+\.\d)(?:/(.*))?$")
BATCH_SIZE = re.compile(r"batchSize\s*=\s*(\d+)", re.IGNORECASE)
VERSIONS = [f"{v}.0" for v in range(50, 64)]
JSON_TYPE = "application/json;charset=UTF-8"
OAUTH_PATH = "/services/oauth2/token"
Response = tuple[int, Any, dict[str, str]]


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class App:
    """Turns one HTTP request into (status, JSON payload, extra headers)."""

    def __init__(self, org: Org, base_url: str, page_delay: float = 0.0) -> None:
        self.org = org
        self.rest = RestApi(org)
        self.base_url = base_url
        self.page_delay = page_delay

    def oauth_token(self, body: bytes, headers: Any) -> Response:
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                             keep_blank_values=True).items()}
        try:
            payload = auth.token_response(self.org.credentials, self.org.tokens, form,
                                          headers.get("Authorization"), self.base_url,
                                          self.org.token_ttl_seconds)
        except auth.OAuthError as exc:
            return exc.status, exc.body, {}
        self.org.note_tokens_changed()
        return 200, payload, {}

    def user_for(self, headers: Any) -> str:
        header = headers.get("Authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() not in ("bearer", "oauth") or not token.strip():
            raise invalid_session()
        user = self.org.tokens.check(token.strip())
        if user is None:
            raise invalid_session()
        return user

    def identity(self, path: str, headers: Any) -> Response:
        user = self.user_for(headers)
        creds = self.org.credentials
        return 200, {"id": f"{self.base_url}{path}", "user_id": user,
                     "organization_id": creds.org_id, "username": creds.username,
                     "active": True, "user_type": "STANDARD"}, {}

    def rest_call(self, method: str, path: str, query: str, headers: Any,
                  body: bytes, query_loop: str | None = None) -> Response:
        match = VERSION_PATH.match(path)
        if match is None:
            if path.rstrip("/") == "/services/data" and method == "GET":
                return 200, [{"label": f"API {v}", "url": f"/services/data/v{v}",
                              "version": v} for v in VERSIONS], {}
            raise not_found()
        user = self.user_for(headers)
        self.org.charge_api_call()
        version, rest = match.group(1), (match.group(2) or "").strip("/")
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        parts = [unquote(p) for p in rest.split("/")] if rest else []
        return self.route(method, version, parts, params, headers, body, user, query_loop)

    def _json(self, body: bytes) -> Any:
        try:
            return json.loads(body or b"null")
        except ValueError:
            raise ApiError(400, "JSON_PARSER_ERROR", "Unexpected character in the request "
                           "body: it is not valid JSON") from None

    def route(self, method: str, version: str, parts: list[str], params: dict[str, str],
              headers: Any, body: bytes, user: str,
              query_loop: str | None = None) -> Response:
        rest = self.rest
        n = len(parts)
        head = parts[0] if parts else ""
        allowed = "GET"
        if n == 0:
            if method == "GET":
                base = f"/services/data/v{version}"
                return 200, {k: f"{base}/{k}" for k in (
                    "sobjects", "query", "queryAll", "limits", "composite", "ui-api")}, {}
        elif head in ("query", "queryAll") and n in (1, 2):
            if method == "GET":
                match = BATCH_SIZE.search(headers.get("Sforce-Query-Options") or "")
                batch = int(match.group(1)) if match else None
                if self.page_delay:
                    # A real org takes its time per page (see README, "page delay"); no
                    # lock is held here, so other calls are answered meanwhile.
                    time.sleep(self.page_delay)
                if n == 2:
                    return 200, rest.query_more(parts[1], version, batch), {}
                return 200, rest.query(params.get("q", ""), head == "queryAll", version,
                                       batch, query_loop), {}
        elif head == "limits" and n == 1:
            if method == "GET":
                return 200, rest.limits(), {}
        elif head == "sobjects" and n == 1:
            if method == "GET":
                return 200, rest.describe_global(version), {}
        elif head == "sobjects" and n == 2:
            allowed = "GET,POST"
            if method == "GET":
                return 200, rest.sobject_info(parts[1], version), {}
            if method == "POST":
                return 201, rest.create(parts[1], self._json(body), user), {}
        elif head == "sobjects" and n == 3 and parts[2] in ("describe", "updated", "deleted"):
            if method == "GET":
                if parts[2] == "describe":
                    return 200, rest.describe(parts[1], version), {}
                if parts[2] == "updated":
                    return 200, rest.updated(parts[1], params), {}
                return 200, rest.deleted(parts[1], params), {}
        elif head == "sobjects" and n == 3:
            allowed = "GET,PATCH,DELETE"
            if method == "GET":
                return 200, rest.get(parts[1], parts[2], params.get("fields"), version), {}
            if method == "PATCH":
                rest.patch(parts[1], parts[2], self._json(body), user)
                return 204, None, {}
            if method == "DELETE":
                rest.delete(parts[1], parts[2], user)
                return 204, None, {}
        elif parts[:2] == ["composite", "sobjects"] and n == 2:
            allowed = "PATCH"
            if method == "PATCH":
                return 200, rest.collections_update(self._json(body), user), {}
        elif parts[:2] == ["ui-api", "object-info"] and n in (5, 6) \
                and parts[3] == "picklist-values":
            if method == "GET":
                field = parts[5] if n == 6 else None
                return 200, rest.picklist_values(parts[2], parts[4], field, version), {}
        else:
            raise not_found()
        raise ApiError(405, "METHOD_NOT_ALLOWED",
                       f"HTTP Method '{method}' not allowed. Allowed are {allowed}")


def _carried(path: str, query: str, headers: Any, body: bytes) -> str:
    """Everything secret a request carried, in the clear: what an echoing fault repeats."""
    parts = []
    header = headers.get("Authorization") or ""
    if header:
        parts.append(header)
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            try:
                parts.append(base64.b64decode(value + "==").decode("utf-8", "replace"))
            except ValueError:
                pass
        else:
            parts.append(value)
    if query:
        parts.append(unquote_plus(query))
    if path == OAUTH_PATH and body:
        text = body.decode("utf-8", "replace")
        parts += [text, unquote_plus(text)]
    return " ".join(parts)


def _fault_answer(fault: Any, path: str, query: str, headers: Any,
                  body: bytes) -> tuple[bytes | None, str]:
    """The body (and its content type) an injected fault answers with."""
    content_type = fault.content_type or JSON_TYPE
    if fault.raw_body is not None:
        return fault.raw_body.encode("utf-8"), content_type
    if fault.body is not NO_BODY:
        return _dumps(fault.body), content_type
    code, message, fields = fault.error_code, fault.message, None
    if fault.echo:
        carried = _carried(path, query, headers, body)
        code, message, fields = f"{code}_{carried}", f"{message}: {carried}", [carried]
    if fault.echo and path == OAUTH_PATH:
        return _dumps({"error": code, "error_description": message}), content_type
    if fault.echo and (fault.status or 200) < 300 and path.endswith("/composite/sobjects"):
        # A collection answers per record: every record fails with the echo.
        try:
            sent = json.loads(body or b"{}").get("records") or []
        except (ValueError, AttributeError):
            sent = []
        error = {"statusCode": code, "message": message, "fields": fields}
        return _dumps([{"success": False, "errors": [error]} for _ in sent]), content_type
    entry: dict[str, Any] = {"message": message, "errorCode": code}
    if fields is not None:
        entry["fields"] = fields
    return _dumps([entry]), content_type


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SalesforceEmulator/1.0"
    sys_version = ""
    timeout = 300
    server: _TLSServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self.dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self.dispatch("POST")

    def do_PATCH(self) -> None:  # noqa: N802
        self.dispatch("PATCH")

    def do_DELETE(self) -> None:  # noqa: N802
        self.dispatch("DELETE")

    def do_PUT(self) -> None:  # noqa: N802
        self.dispatch("PUT")

    def dispatch(self, method: str) -> None:
        app = self.server.app
        org = app.org
        parts = urlsplit(self.path)
        path, query = parts.path, parts.query
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path.startswith("/_emulator/"):
            try:
                kwargs = json.loads(body) if body else {}
            except ValueError:
                kwargs = None
            status, payload = control.handle(org, path[len("/_emulator/"):].strip("/"),
                                             self.headers.get(control.HEADER), kwargs)
            self.reply(status, _dumps(payload), {})
            return
        fault = org.take_fault(path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop_connection:
                org.log_request(method, path, unquote_plus(query), 0)
                self.drop()
                return
            if fault.replaces_body or fault.echo or fault.status is not None:
                org.log_request(method, path, unquote_plus(query), fault.status or 200)
                data, content_type = _fault_answer(fault, path, query, self.headers, body)
                self.reply(fault.status or 200, data, {}, content_type=content_type)
                return
        query_loop = fault.query_loop if fault is not None else None
        try:
            if path == OAUTH_PATH and method == "POST":
                status, payload, extra = app.oauth_token(body, self.headers)
            elif path.startswith("/id/") and method == "GET":
                status, payload, extra = app.identity(path, self.headers)
            else:
                status, payload, extra = app.rest_call(method, path, query, self.headers, body,
                                                       query_loop)
        except ApiError as exc:
            status, payload, extra = exc.status, exc.body, {}
        except Exception as exc:  # a bug in the emulator must still answer like Salesforce
            status, extra = 500, {}
            payload = [{"message": f"emulator error: {exc!r}", "errorCode": "UNKNOWN_EXCEPTION"}]
        org.log_request(method, path, unquote_plus(query), status)
        self.reply(status, None if payload is None else _dumps(payload), extra)

    def reply(self, status: int, data: bytes | None, extra: dict[str, str], *,
              content_type: str = JSON_TYPE) -> None:
        self.send_response(status)
        self.send_header("Date", formatdate(usegmt=True))
        self.send_header("Sforce-Limit-Info", self.server.app.org.limit_info())
        if data is not None:
            self.send_header("Content-Type", content_type)
        for key, value in extra.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data or b"")))
        # Headers and body in one write: two small TLS writes meet Nagle and delayed ACKs.
        self._headers_buffer.append(b"\r\n")
        if data:
            self._headers_buffer.append(data)
        self.wfile.write(b"".join(self._headers_buffer))
        self._headers_buffer = []

    def drop(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: App

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext) -> None:
        super().__init__(address, Handler)
        self.context = context
        self.connections: set[ssl.SSLSocket] = set()
        self.connections_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake runs here, in the connection's own thread, not in accept().
        request.settimeout(30)
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return
        with self.connections_lock:
            self.connections.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)
        except (ssl.SSLError, OSError):
            pass
        finally:
            with self.connections_lock:
                self.connections.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    def close_connections(self) -> None:
        with self.connections_lock:
            for conn in list(self.connections):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class EmulatorServer:
    """One emulated org served over HTTPS; `.org` is its live control object."""

    def __init__(self, data_dir: Path | str | None = None, seed: str = "demo",
                 size: int | None = None, host: str = "127.0.0.1", port: int = 0,
                 token_ttl_seconds: float = 7200, api_daily_limit: int = 15000,
                 persist_interval: float = 1.0, page_delay: float = 0.0) -> None:
        if page_delay < 0:
            raise ValueError(f"page_delay must be 0 or more seconds, not {page_delay!r}")
        self.seed = seed
        self.size = size
        self.host = host
        self.port = port
        self.token_ttl_seconds = token_ttl_seconds
        self.api_daily_limit = api_daily_limit
        self.persist_interval = persist_interval
        self.page_delay = page_delay
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self._httpd: _TLSServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._store: Store | None = None
        self.org: Org
        self.loaded_from_disk = False

    # ----- lifecycle --------------------------------------------------------------------

    def _load_or_seed(self, clock: Clock) -> tuple[OrgState, OrgState]:
        """The saved org if the data dir holds one for this seed and size, else a new seed."""
        assert self.data_dir is not None
        self._store = Store(self.data_dir / "org.sqlite3")
        saved = self._store.load()
        wanted_size = 0 if self.seed == "empty" else (self.size or seed.DEFAULT_SIZE)
        if saved is not None:
            meta, rows = saved
            if meta["seed"] == self.seed and meta["size"] == wanted_size and meta.get("anchor"):
                snapshot = seed.build(self.seed, self.size, meta["anchor"])
                state = snapshot.copy()
                state.apply_saved(meta, rows)
                self._saved_tokens = meta.get("tokens", {})
                self.loaded_from_disk = True
                return state, snapshot
        snapshot = seed.build(self.seed, self.size, clock.now())
        return snapshot.copy(), snapshot

    def start(self) -> EmulatorServer:
        if self.data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="sf-emulator-")
            self.data_dir = Path(self._tmp.name)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        clock = Clock()
        self._saved_tokens: dict[str, Any] = {}
        state, snapshot = self._load_or_seed(clock)
        creds_path = self.data_dir / "credentials.json"
        creds = auth.load_or_create_credentials(creds_path, state.org_id,
                                                state.users["integration"], seed.USERNAME)
        self.org = Org(state, creds, clock=clock, store=self._store,
                       seed_factory=snapshot.copy, token_ttl_seconds=self.token_ttl_seconds,
                       api_daily_limit=self.api_daily_limit)
        self.org.remember_seed(snapshot)
        # A new seed forgets any changes saved for another seed; a reload keeps them.
        self.org._store_reset = not self.loaded_from_disk
        self.org.tokens.load_json(self._saved_tokens)
        self.org.flush()
        _, chain, key = ensure_tls(self.data_dir, self.host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(chain), str(key))
        self._httpd = _TLSServer((self.host, self.port), context)
        self.port = self._httpd.server_address[1]
        self._httpd.app = App(self.org, self.base_url, page_delay=self.page_delay)
        self._write_credentials()
        self._stopping.clear()
        serve = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                 name="sf-emulator-http", daemon=True)
        flusher = threading.Thread(target=self._flush_loop, name="sf-emulator-persist",
                                   daemon=True)
        self._threads = [serve, flusher]
        for thread in self._threads:
            thread.start()
        return self

    def _flush_loop(self) -> None:
        while not self._stopping.wait(self.persist_interval):
            self.org.flush()

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        for thread in self._threads:
            thread.join(timeout=10)
        self.org.flush()
        if self._store is not None:
            self._store.close()
        self._httpd = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self.data_dir = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_until_stopped(self, stop: threading.Event) -> None:
        stop.wait()
        self.stop()

    # ----- what clients need ------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"https://{host}:{self.port}"

    @property
    def instance_url(self) -> str:
        return self.base_url

    @property
    def login_url(self) -> str:
        return self.base_url

    @property
    def ca_path(self) -> str:
        assert self.data_dir is not None
        return str(self.data_dir / "ca.pem")

    @property
    def credentials(self) -> auth.Credentials:
        return self.org.credentials

    @property
    def credentials_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "credentials.json"

    def _write_credentials(self) -> None:
        assert self.data_dir is not None
        creds = self.org.credentials
        key_path = self.data_dir / "jwt_private_key.pem"
        key_path.write_text(creds.private_key_pem)
        key_path.chmod(0o600)
        (self.data_dir / "jwt_certificate.pem").write_text(creds.certificate_pem)
        payload = {**creds.to_json(), "instance_url": self.instance_url,
                   "login_url": self.login_url, "ca_path": self.ca_path,
                   "private_key_path": str(key_path),
                   "certificate_path": str(self.data_dir / "jwt_certificate.pem"),
                   "control_header": control.HEADER}
        path = self.credentials_path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.chmod(0o600)
        tmp.replace(path)
