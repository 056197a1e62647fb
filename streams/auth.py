"""Bearer-token authentication of the profile and admin HTTP endpoints.

The profile endpoints serve customers' personal data and the admin ones
change state, so they answer only to ``Authorization: Bearer <token>`` with
the configured ``SEGSTREAM_WEB_TOKEN``. ``SEGSTREAM_WEB_AUTH`` (on by
default) makes the token mandatory: a worker without one refuses to start.

``/healthz``, ``/readyz`` and ``/metrics`` stay open on purpose: health
checks and Prometheus scrapes carry no credentials, and none of them reveals
personal data (metric labels never hold customer ids).

Nothing here imports Faust: :func:`require_token` only needs a view with a
``json(value, status=..., headers=...)`` method, as :class:`faust.web.View`
has, and a request with ``headers``.

>>> token_matches("Bearer s3cret", b"s3cret")
True
>>> token_matches("Bearer wrong", b"s3cret"), token_matches(None, b"s3cret")
(False, False)
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar, cast

from schemas.errors import ConfigError
from streams.settings import ENV_PREFIX, Settings

Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])

MISSING_TOKEN = (
    f"the profile and admin endpoints need a bearer token: set {ENV_PREFIX}WEB_TOKEN "
    f"(or {ENV_PREFIX}WEB_AUTH=false to serve them unauthenticated, e.g. on a laptop)"
)
WWW_AUTHENTICATE = 'Bearer realm="segstream"'
# Probes and Prometheus scrapes carry no credentials; none of these serves
# personal data. Every other view must be wrapped in require_token.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def configured_token(settings: Settings) -> bytes | None:
    """The token requests must present, or ``None`` when none is set.

    A blank token counts as none: it must never match an empty ``Bearer``.
    """
    if settings.web_token is None:
        return None
    token = settings.web_token.get_secret_value().strip()
    return token.encode() if token else None


def check_web_auth(settings: Settings) -> None:
    """Raise :class:`ConfigError` when a token is required but none is set.

    Called before a worker starts, so a misconfigured worker fails at once
    with the variables to set instead of serving personal data openly.
    """
    if settings.web_auth and configured_token(settings) is None:
        raise ConfigError(MISSING_TOKEN)


def bearer_token(header: str | None) -> bytes | None:
    """The credentials of an ``Authorization: Bearer ...`` header, if any.

    >>> bearer_token("bearer abc"), bearer_token("Basic abc"), bearer_token("Bearer ")
    (b'abc', None, None)
    """
    if not header:
        return None
    scheme, _, credentials = header.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return None
    return credentials.encode()


def token_matches(header: str | None, expected: bytes) -> bool:
    """Whether the header carries ``expected``, compared in constant time."""
    presented = bearer_token(header)
    return presented is not None and hmac.compare_digest(presented, expected)


def refusal(headers: Mapping[str, str], settings: Settings) -> tuple[int, str] | None:
    """``None`` when a request with ``headers`` may proceed, else ``(status, error)``.

    401 for a missing or wrong token; 503 when a token is required but none
    is configured (a worker started without :func:`check_web_auth`), so a
    misconfiguration fails closed.
    """
    expected = configured_token(settings)
    if expected is None:
        return (503, MISSING_TOKEN) if settings.web_auth else None
    if not token_matches(headers.get("Authorization"), expected):
        return 401, "missing or wrong bearer token"
    return None


def authorized(headers: Mapping[str, str], settings: Settings) -> bool:
    """Whether a request with these headers may use the protected endpoints."""
    return refusal(headers, settings) is None


def require_token(settings: Settings) -> Callable[[Handler], Handler]:
    """Decorator for view methods and ``@app.page`` handlers that need the token.

    ``protected = require_token(settings)``, then ``@protected`` on
    ``async def get(self, request, **kwargs)``. A refused request gets
    ``{"error": ...}`` with its status, and a 401 a ``WWW-Authenticate``
    header.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(view: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            refused = refusal(request.headers, settings)
            if refused is None:
                return await handler(view, request, *args, **kwargs)
            status, error = refused
            headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if status == 401 else None
            return view.json({"error": error}, status=status, headers=headers)

        guarded.requires_token = True  # type: ignore[attr-defined]
        return cast(Handler, guarded)

    return decorate


def is_protected(handler: Callable[..., Any]) -> bool:
    """Whether ``handler`` (a function or bound view method) went through :func:`require_token`."""
    return bool(getattr(handler, "requires_token", False))
