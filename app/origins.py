"""Browser origins, as a project lists them in `allowedOrigins` and a browser sends in `Origin`."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator
from yarl import URL

__all__ = ["Origin", "normalize_origin"]


def normalize_origin(value: str) -> str:
    """`scheme://host[:port]` in the form browsers send it: lowercase, default port dropped,
    no path, query or credentials. Anything else is refused, so a setting can never widen
    into a pattern (no wildcards: each allowed origin is named)."""
    if not isinstance(value, str) or len(value) > 253 or value != value.strip():
        raise ValueError("must be an origin such as https://www.example.com")
    try:
        url = URL(value)
    except ValueError:
        raise ValueError("must be an origin such as https://www.example.com") from None
    if (
        url.scheme not in ("http", "https")
        or not url.host
        or url.user is not None
        or url.password is not None
        or url.path not in ("", "/")
        or url.query_string
        or url.fragment
        or value.endswith("/")
    ):
        raise ValueError("must be scheme://host[:port] (http or https, no path)")
    port = "" if url.is_default_port() else f":{url.port}"
    return f"{url.scheme}://{url.host.lower()}{port}"


Origin = Annotated[str, AfterValidator(normalize_origin)]
