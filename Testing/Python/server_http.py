"""Raw HTTP requests to a test server (the attacks of the security and limits tests)."""
import httpx

from medsegsuite import protocol as P

_HTTP = httpx.Client()  # one client: building one per request costs ~0.3 s on a loaded machine


def raw(srv, method, path, key=None, session=None, **kw):
    headers = kw.pop("headers", {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if session:
        headers[P.SESSION_HEADER] = session
    return _HTTP.request(method, srv.url + P.PREFIX + path, headers=headers, timeout=30, **kw)
