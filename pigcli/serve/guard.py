"""What a browser elsewhere may do to a local server: the Host allow-list and the headers of every response.

A page on another site can make the browser send requests to 127.0.0.1, and, after its own name is made
to resolve to 127.0.0.1 (DNS rebinding), read the answers: such requests carry that site's name in their
Host header, so only the local names and the ones the server was started with are answered (421
otherwise). The headers forbid content sniffing, framing by other pages, and anything in the page not
loaded from the server itself (the page uses only its own /static/ files).
"""

from __future__ import annotations

import json

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CONTENT_SECURITY_POLICY = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
]


def host_name(host: str) -> str:
    """The name of a Host header or --host value, without port or IPv6 brackets, lower-case:
    'LocalHost:8000' -> 'localhost', '[::1]:8000' -> '::1', '::1' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


class HostAndHeaders:
    """ASGI middleware, outermost: refuses a request whose Host is not allowed (421) and adds
    SECURITY_HEADERS to every response, errors included."""

    def __init__(self, app, hosts=()):
        self.app = app
        self.hosts = frozenset(host_name(h) for h in (*LOCAL_HOSTS, *hosts))
        names = ", ".join(f"[{h}]" if ":" in h else h for h in sorted(self.hosts))
        self.refusal = json.dumps({"error": f"this server answers only to Host {names} (any port); start it with "
                                            "--allow-host NAME to be reached by another name"}).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        host = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), "")
        if host_name(host) not in self.hosts:
            return await self._refuse(send_with_headers)
        await self.app(scope, receive, send_with_headers)

    async def _refuse(self, send):
        await send({"type": "http.response.start", "status": 421,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self.refusal)).encode())]})
        await send({"type": "http.response.body", "body": self.refusal})
