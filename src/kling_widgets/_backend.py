"""The backend seam: the one place that knows how the EZmodel gateway and Kling's own API differ.

Both speak the same task routes; they differ in the base URL, the path prefix (``/kling/v1/...`` on the
gateway, ``/v1/...`` on Kling), the credentials (a bearer key, or a JWT signed with an access key and a
secret key), how an answer says it failed, and what else they offer (Kling can look a task up by the
``external_task_id`` the client chose, and list an account's tasks) (docs/kling-api.md, "Protocol
differences"). `KlingClient` asks its backend for paths, headers and error mapping, and never branches on
the backend itself.

Credentials are held in `Secret`: no repr, log line or error message shows them; ``key_id`` is a short
fingerprint (of the gateway key, or of Kling's access key) that is safe to show and store.
"""

from __future__ import annotations

import abc
import hashlib
import os
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from ._catalogue import ROUTING_NAMES
from ._errors import APIError, AuthenticationError, error_from_response, kling_error_from_response

__all__ = [
    "ACCESS_KEY_ENV",
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "KLING_BASE_URL_ENV",
    "KLING_DEFAULT_BASE_URL",
    "MAX_PAGE",
    "MAX_PAGE_SIZE",
    "MEDIA_FAMILIES",
    "SECRET_KEY_ENV",
    "TOKEN_LIFETIME",
    "Backend",
    "GatewayBackend",
    "KlingBackend",
    "KlingToken",
    "Secret",
    "choose_backend",
    "colab_secret",
]

API_KEY_ENV = "EZMODEL_API_KEY"
BASE_URL_ENV = "EZMODEL_BASE_URL"
DEFAULT_BASE_URL = "https://api.ezmodel.cloud"

ACCESS_KEY_ENV = "KLING_ACCESS_KEY"
SECRET_KEY_ENV = "KLING_SECRET_KEY"  # noqa: S105 - the variable's name, not a key
KLING_BASE_URL_ENV = "KLING_BASE_URL"
KLING_DEFAULT_BASE_URL = "https://api-singapore.klingai.com"

#: The route prefixes that are not under ``/v1/videos/``: Kling's image and audio routes.
MEDIA_FAMILIES = ("images/", "audio/")

#: Seconds a Kling JWT is valid: Kling's documented 30 minutes.
TOKEN_LIFETIME = 1800.0
# ``nbf`` lies this far in the past, as Kling's sample does, so a server clock a little behind ours
# still accepts a fresh token.
_NOT_BEFORE_SLACK = 5
# Largest page Kling's list endpoint serves, and the highest page number it accepts.
MAX_PAGE_SIZE = 500
MAX_PAGE = 1000


class Secret:
    """Holds a credential so that a repr, a debugger or a variable inspector never shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def __repr__(self) -> str:
        return "<hidden>"

    def reveal(self) -> str:
        """The credential itself, for the Authorization header only."""
        return self._value

    def fingerprint(self) -> str:
        """8 hex digits of the value's SHA-256: tells credentials apart, reveals nothing usable."""
        return hashlib.sha256(self._value.encode()).hexdigest()[:8]


class KlingToken:
    """Kling's API token: a JWT (HS256, ``iss`` = access key), made on demand and renewed before it expires.

    Parameters
    ----------
    access_key, secret_key : Secret
        Kling's key pair; the secret only signs, it is never sent.
    lifetime : float
        Seconds each token is valid (``exp`` = now + lifetime). A new token is made once less than a
        sixth of that is left (5 minutes of 30), so a request never leaves with a token about to expire.
    clock : callable
        Unix time in seconds (`time.time`); the server checks ``exp`` and ``nbf`` against its own.

    Any thread may ask for the token; a lock makes sure one token is made at a time.
    """

    def __init__(
        self,
        access_key: Secret,
        secret_key: Secret,
        *,
        lifetime: float = TOKEN_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not lifetime >= 2:  # whole seconds: below 2 s a fresh token could already be due for renewal
            raise ValueError(f"the token lifetime must be at least 2 s, got {lifetime!r}")
        self._access_key = access_key
        self._secret_key = secret_key
        self._lifetime = lifetime
        self._clock = clock
        self._lock = threading.Lock()
        self._token: Secret | None = None
        self._renew_at = 0.0
        self.made = 0  # how many tokens were made (renewals + 1): tests and diagnostics

    def __repr__(self) -> str:
        return f"KlingToken(made={self.made})"

    def current(self) -> str:
        """A token valid for at least a sixth of its lifetime from now."""
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._renew_at:
                issued = int(now)
                expires = issued + int(self._lifetime)
                claims = {"iss": self._access_key.reveal(), "exp": expires, "nbf": issued - _NOT_BEFORE_SLACK}
                token = jwt.encode(
                    claims, self._secret_key.reveal(), algorithm="HS256", headers={"typ": "JWT"}
                )
                self._token = Secret(token)
                self._renew_at = expires - self._lifetime / 6
                self.made += 1
            return self._token.reveal()

    def scrub(self, text: str) -> str:
        """``text`` without the secret key or the current token."""
        for secret in (self._secret_key, self._token):
            if secret is not None:
                text = text.replace(secret.reveal(), "***")
        return text


class Backend(abc.ABC):
    """What differs between the services behind `KlingClient`. Subclasses fill in the class attributes.

    Parameters
    ----------
    base_url : str
        Where requests go, without a trailing slash.
    """

    #: ``"ezmodel"`` or ``"kling"``.
    name = ""
    #: The environment variable that sets the base URL, and its default: named in error messages.
    base_url_env = ""
    default_base_url = ""
    _prefix = ""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    @property
    @abc.abstractmethod
    def key_id(self) -> str | None:
        """A short fingerprint of the credential that identifies the account, or None without one."""

    @abc.abstractmethod
    def authorization(self) -> str:
        """The ``Authorization`` header's value; `AuthenticationError` naming the setting when unset."""

    @abc.abstractmethod
    def scrub(self, text: str) -> str:
        """``text`` without any credential, should an error message from elsewhere quote one."""

    def path(self, endpoint: str, segment: str | None = None) -> str:
        """The route of ``endpoint`` (e.g. ``text2video``, ``images/generations``), and of one task when
        ``segment`` is given. Video routes are under ``videos/``; the image and audio routes name their
        own family (docs/routes.md, "Results that are not videos")."""
        family = "" if endpoint.startswith(MEDIA_FAMILIES) else "videos/"
        route = f"{self._prefix}/v1/{family}{endpoint}"
        return f"{route}/{segment}" if segment is not None else route

    def api_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``body`` in the form this service takes (every request body goes through here)."""
        return dict(body)

    def prepare(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The submit body as it will be sent (and recorded before sending)."""
        return self.api_body(body)

    def checked(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A 2xx JSON answer, or the error it stands for."""
        return payload

    def error(
        self, status: int, payload: object, *, request_id: str | None, retry_after: float | None
    ) -> APIError:
        """The `APIError` an error answer stands for."""
        return error_from_response(status, payload, request_id=request_id, retry_after=retry_after)

    def lookup_path(self, endpoint: str, external_task_id: str) -> str | None:
        """The route that finds a task by the ``external_task_id`` it was submitted with; None if none."""
        return None

    def list_path(self, endpoint: str, page: int, page_size: int) -> str | None:
        """The route listing the account's tasks of ``endpoint``, newest first; None if there is none."""
        return None


class GatewayBackend(Backend):
    """The EZmodel gateway: ``/kling/v1/...`` routes, a bearer API key (docs/gateway.md)."""

    name = "ezmodel"
    base_url_env = BASE_URL_ENV
    default_base_url = DEFAULT_BASE_URL
    _prefix = "/kling"

    def __init__(self, base_url: str, api_key: Secret | None) -> None:
        super().__init__(base_url)
        self._api_key = api_key

    @property
    def key_id(self) -> str | None:
        return self._api_key.fingerprint() if self._api_key is not None else None

    def authorization(self) -> str:
        if self._api_key is None:
            raise AuthenticationError(
                f"No API key: set the {API_KEY_ENV} environment variable (or a Colab secret of that "
                f"name), or pass api_key= to KlingClient. (For Kling's own API, set {ACCESS_KEY_ENV} and "
                f"{SECRET_KEY_ENV}, or pass access_key= and secret_key=.)",
                code="missing_api_key",
            )
        return f"Bearer {self._api_key.reveal()}"

    def scrub(self, text: str) -> str:
        return text.replace(self._api_key.reveal(), "***") if self._api_key else text


class KlingBackend(Backend):
    """Kling's own API: ``/v1/...`` routes, a JWT from the access and secret keys, raw Kling envelopes.

    Every submission carries an ``external_task_id`` (the caller's, or ``kw-`` + 32 hex digits), so a
    POST whose answer was lost can be found again instead of being sent twice.
    """

    name = "kling"
    base_url_env = KLING_BASE_URL_ENV
    default_base_url = KLING_DEFAULT_BASE_URL

    def __init__(
        self,
        base_url: str,
        access_key: Secret | None,
        secret_key: Secret | None,
        *,
        token_lifetime: float = TOKEN_LIFETIME,
    ) -> None:
        super().__init__(base_url)
        self._access_key = access_key
        self._token = (
            KlingToken(access_key, secret_key, lifetime=token_lifetime)
            if access_key is not None and secret_key is not None
            else None
        )
        # What to name when a key is missing: (its variable, its argument, what it is).
        self._missing = (
            (ACCESS_KEY_ENV, "access_key=", "access key")
            if access_key is None
            else (SECRET_KEY_ENV, "secret_key=", "secret key")
        )

    @property
    def key_id(self) -> str | None:
        return self._access_key.fingerprint() if self._access_key is not None else None

    def authorization(self) -> str:
        if self._token is None:
            variable, argument, what = self._missing
            raise AuthenticationError(
                f"No Kling {what}: set the {variable} environment variable (or a Colab secret of that "
                f"name), or pass {argument} to KlingClient.",
                code="missing_api_key",
            )
        return f"Bearer {self._token.current()}"

    def scrub(self, text: str) -> str:
        return self._token.scrub(text) if self._token is not None else text

    def api_body(self, body: Mapping[str, Any]) -> dict[str, Any]:
        # The gateway's routing names are not Kling models; Kling's request has no model on those routes.
        return {k: v for k, v in body.items() if not (k == "model_name" and v in ROUTING_NAMES)}

    def prepare(self, body: Mapping[str, Any]) -> dict[str, Any]:
        prepared = self.api_body(body)
        if not prepared.get("external_task_id"):
            prepared["external_task_id"] = f"kw-{uuid.uuid4().hex}"
        return prepared

    def checked(self, payload: dict[str, Any]) -> dict[str, Any]:
        # Kling marks failure by a non-zero code; a 200 with one is still a refusal.
        code = payload.get("code", 0)
        if code != 0:
            raise kling_error_from_response(200, payload)
        return payload

    def error(
        self, status: int, payload: object, *, request_id: str | None, retry_after: float | None
    ) -> APIError:
        return kling_error_from_response(status, payload, request_id=request_id, retry_after=retry_after)

    def lookup_path(self, endpoint: str, external_task_id: str) -> str | None:
        query = urllib.parse.urlencode({"external_task_id": external_task_id})
        return f"{self.path(endpoint)}?{query}"

    def list_path(self, endpoint: str, page: int, page_size: int) -> str | None:
        return f"{self.path(endpoint)}?{urllib.parse.urlencode({'pageNum': page, 'pageSize': page_size})}"


def choose_backend(
    api_key: str | None,
    access_key: str | None,
    secret_key: str | None,
    base_url: str | None,
    *,
    token_lifetime: float = TOKEN_LIFETIME,
) -> Backend:
    """The backend the arguments and the environment ask for (docs/kling-api.md, "Configuration").

    Arguments come first: ``api_key=`` means the gateway, ``access_key=``/``secret_key=`` Kling's API, and
    the environment of the other backend is then ignored (a half of Kling's pair not given is read from
    the environment). Without arguments, ``EZMODEL_API_KEY`` means the gateway and
    ``KLING_ACCESS_KEY``/``KLING_SECRET_KEY`` Kling's API (each also read from a Colab secret of that
    name); with neither, the gateway (and a missing key is reported at the first request). The base URL is
    ``base_url=``, else the chosen backend's variable, else its default.

    Raises
    ------
    AuthenticationError
        Both an EZmodel key and Kling keys were given (as arguments, or all from the environment), or a
        key contains spaces or non-ASCII characters (a bad paste; the key is not echoed).
    ValueError
        The base URL is not http(s).
    """
    if api_key and (access_key or secret_key):
        raise AuthenticationError(
            "Pass either api_key= (the EZmodel gateway) or access_key= and secret_key= (Kling's own API), "
            "not both.",
            code="ambiguous_keys",
        )
    kling = bool(access_key or secret_key)
    if not api_key and not kling:
        api_key = _setting(API_KEY_ENV)
        kling = bool(_setting(ACCESS_KEY_ENV) or _setting(SECRET_KEY_ENV))
        if api_key and kling:
            raise AuthenticationError(
                f"Both {API_KEY_ENV} (the EZmodel gateway) and {ACCESS_KEY_ENV}/{SECRET_KEY_ENV} (Kling's "
                "own API) are set; unset one, or pass api_key= or access_key= and secret_key= to choose.",
                code="ambiguous_keys",
            )
    if kling:
        access_key = access_key or _setting(ACCESS_KEY_ENV)
        secret_key = secret_key or _setting(SECRET_KEY_ENV)
    backend: type[Backend] = KlingBackend if kling else GatewayBackend
    url = (base_url or os.environ.get(backend.base_url_env) or backend.default_base_url).strip().rstrip("/")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"base_url must start with http:// or https://, got {url!r}")
    if kling:
        return KlingBackend(
            url,
            _secret(access_key, "access key"),
            _secret(secret_key, "secret key"),
            token_lifetime=token_lifetime,
        )
    return GatewayBackend(url, _secret(api_key, "API key"))


def _setting(name: str) -> str | None:
    return os.environ.get(name) or colab_secret(name)


def _secret(value: str | None, what: str) -> Secret | None:
    value = (value or "").strip()
    if not value:
        return None
    if not value.isascii() or not value.isprintable() or " " in value:
        # An HTTP library would put the whole header value, key included, into its error message.
        raise AuthenticationError(
            f"The {what} contains spaces or non-ASCII characters; copy it again from the console.",
            code="invalid_api_key",
        )
    return Secret(value)


def colab_secret(name: str) -> str | None:
    """The Colab secret ``name``, or None outside Colab or when it is unset or access is refused."""
    if "google.colab" not in sys.modules:  # Colab's kernel imports it at start-up
        return None
    try:
        from google.colab import userdata  # type: ignore[import-not-found]

        value = userdata.get(name)
    except Exception:  # SecretNotFoundError, NotebookAccessError, TimeoutException, ...
        return None
    return value if isinstance(value, str) else None
