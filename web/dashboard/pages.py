"""The dashboard's pages, login and static files, served by every worker under `/app`.

The server renders each page's frame — navigation, the project, the forms — and decides who may
open it: a page needs a login session (the cookie, or a session bearer token) whose role in the
chosen project has the page's right, else it answers 403, and a link to it is never shown.
The data on a page is then read (and changed) by `static/app.js` through the same public API
integrations use, with the same session cookie — so the dashboard can show nothing the API
would not, and forms show the API's own validation messages (ADR 0021).

CSRF: the session cookie is `SameSite=Strict`, and the form posts here (login, logout) also
need an `Origin` of this very host when the browser sends one.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, urlsplit

from aiohttp import web
from faust.web import Request, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from app.access import ROLE_PERMISSIONS, Permission, Role, looks_like_session_token
from app.topology import app, directory, users
from web.auth import _cookie, throttle
from web.base import SESSION_COOKIE, ApiError, ApiView, path_param

__all__ = ["PAGES", "PROJECT_COOKIE"]

HERE = Path(__file__).parent
STATIC = HERE / "static"
SDK_BUILD = HERE.parents[1] / "sdk" / "js" / "dist" / "leadscore.min.js"
PROJECT_COOKIE = "leadscore_project"

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(frozen=True)
class Page:
    path: str
    template: str
    title: str
    need: Permission
    in_nav: bool = True


PAGES: tuple[Page, ...] = (
    Page("/app", "overview.html", "Overview", "read"),
    Page("/app/leads", "leads.html", "Leads", "read"),
    Page("/app/rules", "rules.html", "Rules", "rules"),
    Page("/app/settings", "settings.html", "Settings", "settings"),
    Page("/app/automations", "automations.html", "Automations", "rules"),
    Page("/app/keys", "keys.html", "Keys", "admin"),
    Page("/app/dead-letters", "dead_letters.html", "Dead letters", "admin"),
    Page("/app/audit", "audit.html", "Audit log", "admin"),
)
LEAD_PAGE = Page("/app/leads/{lead_id}", "lead.html", "Lead", "read", in_nav=False)


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page: the user, their roles, and the project and role chosen now."""

    email: str
    roles: dict[str, Role]
    project_id: str
    role: Role

    def may(self, need: Permission) -> bool:
        return need in ROLE_PERMISSIONS[self.role]


class _Redirect(Exception):
    def __init__(self, location: str) -> None:
        self.location = location


def _cookies(request: Request) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in (request.headers.get("Cookie") or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name and value and value.isascii() and value.isprintable():
            found.setdefault(name, value)
    return found


def _session_token(request: Request) -> str | None:
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and looks_like_session_token(token.strip()):
        return token.strip()
    cookie = _cookies(request).get(SESSION_COOKIE)
    return cookie if cookie and looks_like_session_token(cookie) else None


def _login_location(request: Request) -> str:
    return "/app/login?next=" + quote(str(request.rel_url), safe="")


def same_origin(request: Request) -> bool:
    """A form post from one of our own pages: the browser's Origin names this host (or none is
    sent, as by non-browser clients, which carry no ambient cookie to abuse)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("Host", "")


def _see_other(location: str, set_cookie: str | None = None) -> Response:
    response = web.Response(status=303, headers={"Location": location})
    if set_cookie is not None:
        response.headers["Set-Cookie"] = set_cookie
    return cast(Response, response)  # Faust's aiohttp driver answers with aiohttp responses


def _render(template: str, status: int = 200, **context: Any) -> Response:
    html = templates.get_template(template).render(pages=PAGES, **context)
    response = web.Response(text=html, content_type="text/html", status=status)
    response.headers["Cache-Control"] = "no-store"
    return cast(Response, response)


class PageView(ApiView):
    page: Page = PAGES[0]

    async def viewer(self, request: Request) -> Viewer | Response:
        """The logged-in viewer with the project they chose, or the page that answers instead
        (login, project picker, 403)."""
        if not directory.loaded:
            raise ApiError(503, "worker is starting")
        token = _session_token(request)
        session = await users.session(token) if token else None
        if session is None:
            raise _Redirect(_login_location(request))
        roles = {p: r for p, r in session.roles.items() if directory.get(p) is not None}
        wanted = request.query.get("project") or _cookies(request).get(PROJECT_COOKIE)
        if wanted not in roles:
            wanted = next(iter(roles)) if len(roles) == 1 else None
        if wanted is None:
            return _render(
                "projects.html",
                title="Choose a project",
                email=session.email,
                projects=[(p, directory.get(p), r) for p, r in sorted(roles.items())],
                next=request.rel_url.path,
                viewer=None,
            )
        viewer = Viewer(session.email, roles, wanted, roles[wanted])
        if not viewer.may(self.page.need):
            return _render(
                "forbidden.html",
                status=403,
                title="Not allowed",
                viewer=viewer,
                project=directory.get(wanted),
                need=self.page.need,
                current=None,
            )
        return viewer

    async def show(self, request: Request, **context: Any) -> Response:
        try:
            viewer = await self.viewer(request)
        except _Redirect as redirect:
            return _see_other(redirect.location)
        if not isinstance(viewer, Viewer):
            return viewer
        response = _render(
            self.page.template,
            title=self.page.title,
            viewer=viewer,
            project=directory.get(viewer.project_id),
            current=self.page.path,
            **context,
        )
        if request.query.get("project") == viewer.project_id:
            cast(web.Response, response).set_cookie(
                PROJECT_COOKIE, viewer.project_id, path="/", samesite="Strict", httponly=True
            )
        return response


def _page_view(page: Page) -> type[PageView]:
    class _View(PageView):
        async def get(self, request: Request) -> Response:
            return await self.show(request)

    _View.page = page
    _View.__name__ = _View.__qualname__ = "Page_" + page.template.split(".")[0]
    return _View


for _page in PAGES:
    app.page(_page.path)(_page_view(_page))


@app.page(LEAD_PAGE.path)
class LeadPageView(PageView):
    page = LEAD_PAGE

    async def get(self, request: Request, lead_id: str) -> Response:
        return await self.show(request, lead_id=path_param(lead_id, "leadId"))


@app.page("/app/login")
class LoginPageView(ApiView):
    """A plain HTML form (works without script): a session cookie, then the page asked for."""

    async def get(self, request: Request) -> Response:
        return _render(
            "login.html",
            title="Log in",
            viewer=None,
            error=None,
            email="",
            next=_safe_next(request.query.get("next")),
        )

    async def post(self, request: Request) -> Response:
        form = await cast(web.Request, request).post()
        email = str(form.get("email") or "")[:320]
        password = str(form.get("password") or "")[:1024]
        target = _safe_next(str(form.get("next") or ""))
        if not same_origin(request):
            return _render(
                "login.html",
                status=403,
                title="Log in",
                viewer=None,
                email=email,
                next=target,
                error="This form must be sent from this site.",
            )
        address = getattr(request, "remote", None) or "unknown"
        who = [f"email:{email.strip().lower()}", f"ip:{address}"]
        _, retry_after = throttle.check(who)
        if retry_after is not None:
            return _render(
                "login.html",
                status=429,
                title="Log in",
                viewer=None,
                email=email,
                next=target,
                error="Too many failed logins; try again later.",
            )
        if not email or not password:  # not a failed login: nothing to count
            return _render(
                "login.html",
                status=422,
                title="Log in",
                viewer=None,
                email=email,
                next=target,
                error="E-mail and password are required.",
            )
        user = await users.verify_password(email, password)
        if user is None:
            throttle.failed(who)
            return _render(
                "login.html",
                status=401,
                title="Log in",
                viewer=None,
                email=email,
                next=target,
                error="Wrong e-mail or password.",
            )
        throttle.succeeded(who[:1])
        token, expires = await users.start_session(user["userId"])
        return _see_other(target, _cookie(token, expires))


@app.page("/app/logout")
class LogoutPageView(ApiView):
    async def post(self, request: Request) -> Response:
        token = _cookies(request).get(SESSION_COOKIE)  # a form post carries the cookie only
        if token is not None and looks_like_session_token(token) and same_origin(request):
            session = await users.session(token)
            if session is not None:
                await users.revoke_session(session.token_hash)
        return _see_other("/app/login", _cookie("", None))


def _safe_next(value: str | None) -> str:
    """Only a path of the dashboard itself: never an open redirect."""
    if value and value.startswith("/app") and not value.startswith("//") and "\\" not in value:
        return value
    return "/app"


_STATIC_NAMES = frozenset(p.name for p in STATIC.iterdir()) if STATIC.is_dir() else frozenset()


@app.page("/app/static/{name}")
class StaticView(ApiView):
    """The dashboard's own script and style sheet, and the browser SDK (the snippet on the keys
    page loads it from here): no CDN, nothing from the internet."""

    async def get(self, request: Request, name: str) -> Response:
        if name in _STATIC_NAMES:
            path = STATIC / name
        elif name == "leadscore.min.js" and SDK_BUILD.is_file():
            path = SDK_BUILD
        else:
            raise ApiError(404, "no such file")
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = web.Response(body=path.read_bytes(), content_type=content_type)
        response.headers["Cache-Control"] = "public, max-age=300"
        if name == "leadscore.min.js":
            response.headers["Access-Control-Allow-Origin"] = "*"  # websites load the SDK
            response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
        return cast(Response, response)
