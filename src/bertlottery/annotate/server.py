"""The annotation page's local HTTP server (standard library only), bound to 127.0.0.1.

Routes (everything else is 404; request paths with ``..``, ``.``, backslashes or ``//`` are 403)::

    GET  /                           the page (static/app.js, static/app.css beside it)
    GET  /api/state                  folder, model, task, labels, progress, the first unlabelled item
    GET  /api/items?offset=&limit=   items in the store's stable order, with their labels
    GET  /api/next?after=INDEX       the first unlabelled item after INDEX (wrapping), or null
    GET  /api/item/<ex>/<l>/<h>/<k>  one map: tokens, values [query][key], label, neighbours
    GET  /api/suggest/<ex>/<l>/<h>/<k>  the rule labeller's label and scores for one map (asked for
                                     only when the person asks: shown unasked, it would anchor them)
    POST /api/label                  {"id": "ex000/3/5/raw", "label": "vertical" | "unsure" | null}
    POST /api/export                 write the labelled set to the export folder (`export_labelled`)

No route turns a request path into a file path: map files are looked up from the folder's own
index, so a request can only ever name an item the index lists. POSTs must be JSON (a cross-site
form cannot send that without a CORS preflight, which this server never grants) and the Host header
must name this server (DNS rebinding).

>>> server = make_server(MapsStore("runs/attention/maps"), "runs/attention/labelled", port=0)  # doctest: +SKIP
>>> threading.Thread(target=server.serve_forever, daemon=True).start()               # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from ..attention.rules import label_map
from ..errors import UserError
from . import page
from .export import export_labelled
from .store import CHOICES, Item, MapsStore, OutsideFolder

__all__ = ["HOST", "DEFAULT_PORT", "AnnotateServer", "make_server"]

HOST = "127.0.0.1"  # never another interface: the page writes files and has no login
DEFAULT_PORT = 8765
MAX_BODY = 64 * 1024

_STATIC = {
    "/": ("text/html; charset=utf-8", page.HTML),
    "/index.html": ("text/html; charset=utf-8", page.HTML),
    "/static/app.js": ("text/javascript; charset=utf-8", page.JS),
    "/static/app.css": ("text/css; charset=utf-8", page.CSS),
}
# The page loads nothing from elsewhere; the policy makes the browser hold it to that.
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class HttpError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


class AnnotateServer(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's listen queue holds 5: a burst of saves (several tabs, a retrying page, a busy
    # machine slow to accept) overflowed it and the kernel reset the connections beyond it, losing
    # labels. The kernel caps this at net.core.somaxconn (4096 on current Linux).
    request_queue_size = 1024

    def __init__(self, store: MapsStore, export_dir: Path, port: int, overwrite: bool = False) -> None:
        self.store = store
        self.export_dir = Path(export_dir)
        self.overwrite = overwrite  # Export may write into a folder that is not an earlier export
        self.export_lock = threading.Lock()  # two clicks at once would share one scratch folder
        super().__init__((HOST, port), _Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


def make_server(store: MapsStore, export_dir: str | os.PathLike, port: int = DEFAULT_PORT, *,
                overwrite: bool = False) -> AnnotateServer:
    """A server for ``store`` on 127.0.0.1:``port`` (0: any free port); call ``serve_forever()``.

    The page's Export writes to ``export_dir`` by `export_labelled`'s rule (``overwrite`` as there).
    """
    try:
        return AnnotateServer(store, Path(export_dir), port, overwrite)
    except OSError as error:
        raise UserError(f"cannot listen on {HOST}:{port} ({error.strerror}); pass another --port, "
                        "or --port 0 for any free one.") from None


def _refused_path(path: str) -> bool:
    """Whether a decoded request path tries to leave the site's root (traversal or an absolute path)."""
    if "\\" in path or "\x00" in path or path.startswith("//") or not path.startswith("/"):
        return True
    return any(part in ("..", ".") for part in path.split("/"))


def _map_json(values: np.ndarray) -> list[list[float]]:
    # float16 maps carry ~3 significant digits: 4 keep them exactly enough and the JSON small
    if not np.isfinite(values).all():
        raise ValueError("map has NaN or infinite values; re-extract the maps")
    return np.char.mod("%.4g", values).astype(float).tolist()


class _Handler(BaseHTTPRequestHandler):
    server: AnnotateServer
    server_version = "bertlottery-annotate"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet: the terminal shows the URL, the page shows errors

    # --- plumbing --------------------------------------------------------------------------------

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", _CSP)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _route(self) -> tuple[str, dict[str, list[str]]]:
        parts = urlsplit(self.path)
        if parts.scheme or parts.netloc:
            raise HttpError(HTTPStatus.FORBIDDEN, "absolute URLs are refused; request a path on this server")
        path = unquote(parts.path)
        if _refused_path(path):
            raise HttpError(HTTPStatus.FORBIDDEN, f"path {parts.path!r} is refused: it leaves the served folder")
        host = self.headers.get("Host", "")
        port = self.server.server_address[1]
        if host not in (f"{HOST}:{port}", f"localhost:{port}"):
            raise HttpError(HTTPStatus.FORBIDDEN, f"Host {host!r} is not this server; open {self.server.url}")
        return path, parse_qs(parts.query)

    def _handle(self, method: str) -> None:
        try:
            path, query = self._route()
            if method == "GET":
                self._get(path, query)
            else:
                self._post(path)
        except HttpError as error:
            self._json({"error": str(error)}, error.status)
        except OutsideFolder as error:
            self._json({"error": f"refused: {error}"}, HTTPStatus.FORBIDDEN)
        except (UserError, ValueError, OSError) as error:
            self._json({"error": str(error)}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # --- GET -------------------------------------------------------------------------------------

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        store = self.server.store
        if path in _STATIC:
            content_type, text = _STATIC[path]
            self._send(HTTPStatus.OK, text.encode(), content_type)
        elif path == "/api/state":
            first = store.next_unlabelled()
            self._json({
                "folder": store.root.name, "model": store.index.model, "task": store.index.task,
                "weights": store.index.weights, "layers": store.layers, "heads": store.heads,
                "kinds": store.kinds, "labels": list(CHOICES), "export_dir": str(self.server.export_dir),
                "shuffle_seed": store.shuffle_seed,
                **self._progress(), "first_unlabelled": first.id if first else None,
                "first": store.items[0].id if store.items else None,
            })
        elif path == "/api/items":
            offset = _int_arg(query, "offset", 0)
            limit = _int_arg(query, "limit", len(store.items))
            labels = store.labels()
            self._json({**self._progress(), "offset": offset, "items": [
                {**item.as_dict(), "label": labels.get(item.id)} for item in store.items[offset:offset + limit]]})
        elif path == "/api/next":
            item = store.next_unlabelled(_int_arg(query, "after", -1, minimum=-1))  # -1: from the start
            self._json({"item": item.as_dict() if item else None, **self._progress()})
        elif path.startswith("/api/item/"):
            self._json(self._item(self._lookup(path.removeprefix("/api/item/"))))
        elif path.startswith("/api/suggest/"):
            item = self._lookup(path.removeprefix("/api/suggest/"))
            rules = label_map(store.load_map(item), store.tokens(item.example))
            self._json({"id": item.id, "label": rules.label, "scores": rules.scores})
        else:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no page {path!r} here; open {self.server.url}")

    def _progress(self) -> dict[str, Any]:
        labels = self.server.store.labels()
        counts = dict.fromkeys(CHOICES, 0)
        for label in labels.values():
            counts[label] += 1
        return {"n_labelled": len(labels), "total": len(self.server.store.items), "counts": counts}

    def _lookup(self, item_id: str) -> Item:
        try:
            return self.server.store.item(item_id)
        except KeyError as error:
            raise HttpError(HTTPStatus.BAD_REQUEST, error.args[0]) from None

    def _item(self, item: Item) -> dict[str, Any]:
        store = self.server.store
        values = store.load_map(item)
        items = store.items
        return {
            "item": item.as_dict(), "label": store.label_of(item.id),
            "tokens": store.tokens(item.example), "dev_index": store.examples[item.example].dev_index,
            "segments": store.examples[item.example].segments,
            "map": _map_json(values), "max": float(values.max()) if values.size else 0.0,
            "prev": items[item.index - 1].id if item.index > 0 else None,
            "next": items[item.index + 1].id if item.index + 1 < len(items) else None,
            **self._progress(),
        }

    # --- POST ------------------------------------------------------------------------------------

    def _body(self) -> dict[str, Any]:
        origin = self.headers.get("Origin")
        port = self.server.server_address[1]
        if origin is not None and origin not in (f"http://{HOST}:{port}", f"http://localhost:{port}"):
            raise HttpError(HTTPStatus.FORBIDDEN, f"requests from {origin!r} are refused")
        if self.headers.get_content_type() != "application/json":
            raise HttpError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the body as application/json")
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise HttpError(HTTPStatus.LENGTH_REQUIRED, "Content-Length is required")
        if int(length) > MAX_BODY:
            raise HttpError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body over {MAX_BODY} bytes")
        try:
            body = json.loads(self.rfile.read(int(length)) or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise HttpError(HTTPStatus.BAD_REQUEST, f"body is not JSON ({error})") from None
        except RecursionError:  # json's parser recurses once per level: [[[[...]]]] exhausts the stack
            raise HttpError(HTTPStatus.BAD_REQUEST, "body is nested too deeply; send one flat JSON object") from None
        if not isinstance(body, dict):
            raise HttpError(HTTPStatus.BAD_REQUEST, "body must be a JSON object")
        return body

    def _post(self, path: str) -> None:
        store = self.server.store
        if path == "/api/label":
            body = self._body()
            item_id, label = body.get("id"), body.get("label")
            if not isinstance(item_id, str):
                raise HttpError(HTTPStatus.BAD_REQUEST, 'give the map as "id": "<example>/<layer>/<head>/<kind>"')
            item = self._lookup(item_id)
            if label is not None and label not in CHOICES:
                raise HttpError(HTTPStatus.BAD_REQUEST,
                                f"unknown label {label!r}; use one of {', '.join(CHOICES)} (or null to clear)")
            store.set_label(item.id, label)
            following = store.next_unlabelled(item.index)
            self._json({"id": item.id, "label": label, "next_unlabelled": following.id if following else None,
                        **self._progress()})
        elif path == "/api/export":
            self._body()
            try:
                with self.server.export_lock:
                    summary = export_labelled(store.root, self.server.export_dir, overwrite=self.server.overwrite)
            except UserError as error:
                raise HttpError(HTTPStatus.CONFLICT, str(error)) from None
            self._json({**summary, "out": str(self.server.export_dir)})
        else:
            raise HttpError(HTTPStatus.NOT_FOUND, f"no action {path!r} here")


def _int_arg(query: dict[str, list[str]], name: str, default: int, *, minimum: int = 0) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[0])
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise HttpError(HTTPStatus.BAD_REQUEST, f"{name} must be a whole number >= {minimum}, got {values[0]!r}")
    return value
