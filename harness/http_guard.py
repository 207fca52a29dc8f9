"""What the harness's Gradio servers let through: a read-only page, nothing fetched from outside.

Owns: `ReadOnlyGuard`, a plain ASGI middleware in front of a Gradio app (the leaderboard's
`app.launch_blocks` and the sweep's pick page install it), `launch_options` (the launch settings
both use), and the Content-Security-Policy the pages are served with. A foundation: must not
know what a page shows, and imports no harness layer.

- Anything but GET, HEAD and OPTIONS is refused (403, before the body is read) except the few
  routes the board's own events and its public API use (`queue/join`, `call/<api>`,
  `run/<api>`, `cancel`, `reset`). So `/gradio_api/upload`, `/gradio_api/process_recording`
  and every other route that would store a stranger's bytes answer 403 and write nothing.
- `GET /gradio_api/deep_link` is refused too: it writes the session's component state to a new
  file in Gradio's upload folder on every call, a write any anonymous client could repeat. So is
  `GET /gradio_api/file=<scheme>:…`, which Gradio answers with a redirect to that address (the
  board would lend its name to any link).
- The body of an allowed POST is read first (at most `MAX_BODY` bytes, JSON nested at most 32
  deep) and refused when it carries a Gradio file object: Gradio would otherwise copy a file
  named by path or fetch one named by URL into its cache, an upload by another door.
- HTML pages leave with the `<script src>` and `<link href>` tags that point to other hosts
  removed (Gradio's page asks cdnjs for a script and preconnects to Google Fonts), and every
  response carries `CSP`, which lets a browser load scripts, styles, fonts, images and
  connections from the board's own origin (plus data:/blob: images) only.
"""

from __future__ import annotations

import re
from typing import Any

from harness.errors import HarnessError

MAX_BODY = 1 << 20
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; "
    "connect-src 'self'; media-src 'self' data: blob:; worker-src 'self' blob:; frame-src 'self'; "
    "object-src 'none'; base-uri 'self'; form-action 'self'"
)
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# Gradio redirects `file=<url>` and its deprecated twin `file/<url>` to any http(s) URL (an open
# redirect); any scheme, `//host` or a backslash form is refused on both, before Gradio sees it.
_REFUSED_READS = re.compile(
    r"/gradio_api/(?:deep_link/?$|file(?:=|/+)\s*(?:[A-Za-z][A-Za-z0-9+.\-]*:|[/\\]{2}|\\))"
)
_WRITE_ROUTES = re.compile(r"/gradio_api/(?:queue/join|(?:call|run|api)/[A-Za-z0-9_\-]+|cancel|reset)/?$")
# <script ... src="https://..."> ... </script> and <link ... href="//..."> (any other host)
_REMOTE_TAG = re.compile(
    rb"<script\b[^>]*\bsrc\s*=\s*[\"']?\s*(?:[a-z][a-z0-9+.\-]*:)?//[^>]*>\s*</script\s*>"
    rb"|<link\b[^>]*\bhref\s*=\s*[\"']?\s*(?:[a-z][a-z0-9+.\-]*:)?//[^>]*>",
    re.IGNORECASE,
)


def strip_remote_tags(html: bytes) -> bytes:
    """The page without script and link tags that would make a browser contact another host."""
    return _REMOTE_TAG.sub(b"", html)


def carries_file(obj: Any) -> bool:
    """True when a decoded request holds a Gradio file object ({"meta": {"_type": "gradio.FileData"}})."""
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            meta = item.get("meta")
            if isinstance(meta, dict) and meta.get("_type") == "gradio.FileData":
                return True
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


async def _answer(send, status: int, text: str) -> None:
    body = text.encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                (b"content-security-policy", CSP.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ReadOnlyGuard:
    """ASGI middleware: refuse writes and file objects, strip remote tags, add the CSP header."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _REFUSED_READS.search(scope["path"]):
            return await _answer(send, 403, "this page is read-only: the route is refused\n")
        if scope["method"] not in _SAFE_METHODS:
            if not _WRITE_ROUTES.search(scope["path"]):
                return await _answer(send, 403, "this page is read-only: the route is refused\n")
            body, refusal = await _read_body(receive)
            if refusal is not None:
                return await _answer(send, *refusal)
            receive = _replay(body, receive)
        await self.app(scope, receive, _Rewriter(send))


async def _read_body(receive) -> tuple[bytes, tuple[int, str] | None]:
    from harness.safeio import loads_json

    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", (400, "disconnected\n")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return b"", (413, f"request body over {MAX_BODY} bytes\n")
        chunks.append(chunk)
        more = message.get("more_body", False)
    body = b"".join(chunks)
    if not body:
        return body, None
    try:
        data = loads_json(body.decode("utf-8"), source="request body")
    except (HarnessError, UnicodeDecodeError):
        return b"", (400, "request body is not JSON\n")
    if carries_file(data):
        return b"", (403, "this page is read-only: file objects are refused\n")
    return body, None


def _replay(body: bytes, receive):
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _Rewriter:
    """Adds the CSP header to every response; buffers HTML pages to strip remote tags."""

    def __init__(self, send):
        self.send = send
        self.start: dict | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message):
        if message["type"] == "http.response.start":
            headers = [
                (k, v) for k, v in message.get("headers", []) if k.lower() != b"content-security-policy"
            ]
            headers.append((b"content-security-policy", CSP.encode()))
            message = {**message, "headers": headers}
            content_type = next((v for k, v in headers if k.lower() == b"content-type"), b"")
            if content_type.lower().startswith(b"text/html"):
                self.start = message  # held until the whole page is here
                return
            return await self.send(message)
        if message["type"] == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = strip_remote_tags(b"".join(self.chunks))
            headers = [(k, v) for k, v in self.start["headers"] if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            start, self.start, self.chunks = self.start, None, []
            await self.send({**start, "headers": headers})
            return await self.send({"type": "http.response.body", "body": body})
        return await self.send(message)


def launch_options() -> dict:
    """`gr.Blocks.launch` settings every harness page uses: no share link, no SSR, MCP, PWA or
    monitoring routes, errors shown as "Error" only (their text could carry a team's words),
    and `ReadOnlyGuard` in front of every request."""
    from starlette.middleware import Middleware

    return {
        "share": False,
        "show_error": False,
        "ssr_mode": False,
        "mcp_server": False,
        "pwa": False,
        "enable_monitoring": False,
        "app_kwargs": {"middleware": [Middleware(ReadOnlyGuard)]},
    }
