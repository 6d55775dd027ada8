"""The web console: server-rendered pages (Jinja2), console sessions in the database, CSRF tokens
in every form, the same roles as the API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, FastAPI, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from vmshield.center import auth
from vmshield.center.api import inventory_tree, parse_time
from vmshield.center.db import (
    ApiToken,
    AuditEntry,
    Connection,
    Deployment,
    EventRow,
    Node,
    Profile,
    Service,
)
from vmshield.center.db import User as DbUser
from vmshield.center.profiles import (
    DETECT,
    IDS_CATEGORIES,
    PRESETS,
    URL_CATEGORIES,
    FileProfileSpec,
    NetworkPolicySpec,
)
from vmshield.center.store import Conflict, NotFound, Store
from vmshield.engines.net.urls.db import CONTENT_CATEGORIES

COOKIE = "vms_session"
templates = Jinja2Templates(
    directory=str(__import__("pathlib").Path(__file__).parent / "templates")
)
templates.env.filters["ts"] = lambda v: (
    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(v)) + " UTC" if v else "never"
)
templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)

router = APIRouter(include_in_schema=False)


class Login(Exception):
    """Not logged in: send the browser to the login page."""


class User:
    def __init__(self, name: str, role: str, csrf: str) -> None:
        self.name = name
        self.role = role
        self.csrf = csrf

    def can(self, role: str) -> bool:
        return auth.role_at_least(self.role, role)


def store_of(request: Request) -> Store:
    return request.app.state.ctx.store  # type: ignore[no-any-return]


def current(request: Request, role: str = "viewer") -> User:
    token = request.cookies.get(COOKIE)
    if not token:
        raise Login()
    with store_of(request).sessions() as s:
        found = auth.session_principal(s, token)
    if found is None:
        raise Login()
    user, sess = found
    u = User(user.name, user.role, sess.csrf)
    if not u.can(role):
        raise HTTPException(403, f"role {u.role} may not do this (needs {role})")
    return u


def check_csrf(u: User, token: str) -> None:
    import hmac

    if not hmac.compare_digest(u.csrf, token or ""):
        raise HTTPException(403, "stale or missing form token; reload the page")


def page(request: Request, name: str, u: User | None, **kw: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"user": u, **kw})


def back(url: str, msg: str | None = None, error: str | None = None) -> RedirectResponse:
    q = {k: v for k, v in (("msg", msg), ("error", error)) if v}
    return RedirectResponse(url + (("?" + urlencode(q)) if q else ""), status_code=303)


def change(
    request: Request,
    role: str,
    csrf: str,
    action: Callable[[Store, Session, str], object],
    refused: tuple[type[Exception], ...],
    to: str,
    msg: str,
) -> Response:
    """A form that changes the store: role and CSRF checked, `action(store, session, actor)` run
    in one transaction, then back to `to` with `msg`, or with the refusal when it raises one of
    `refused` (anything else is a server error, not a message)."""
    u = current(request, role)
    check_csrf(u, csrf)
    st = store_of(request)
    try:
        with st.sessions.begin() as s:
            action(st, s, f"user:{u.name}")
    except refused as exc:
        return back(to, error=str(exc))
    return back(to, msg=msg)


# ---- login -----------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request) -> HTMLResponse:
    return page(request, "login.html", None, error=request.query_params.get("error"))


@router.post("/login")
def login(request: Request, name: str = Form(""), password: str = Form("")) -> Response:
    st = store_of(request)
    client = request.client.host if request.client else "?"
    with st.sessions.begin() as s:
        if auth.login_blocked(s, name[:64], client):
            return page(
                request, "login.html", None, error="Too many failed logins. Wait a few minutes."
            )
        user = auth.authenticate(s, name[:64], password[:1024], client)
        if user is None:
            request.app.state.ctx.metrics.logins_failed.inc()
            error = "Wrong name or password."
            token = None
        else:
            token, _ = auth.create_session(s, user)
    if token is None:
        return page(request, "login.html", None, error=error)
    resp = RedirectResponse("/inventory", status_code=303)
    resp.set_cookie(
        COOKIE,
        token,
        max_age=auth.SESSION_SECONDS,
        httponly=True,
        secure=True,
        samesite="strict",
    )
    return resp


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    u = current(request)
    check_csrf(u, csrf)
    with store_of(request).sessions.begin() as s:
        auth.end_session(s, request.cookies.get(COOKIE, ""))
        auth.audit(s, u.name, "logout", f"user:{u.name}", {})
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(COOKIE)
    return resp


@router.get("/")
def home() -> Response:
    return RedirectResponse("/inventory", status_code=303)


# ---- inventory and assignment ----------------------------------------------------------------


@router.get("/inventory")
def inventory(request: Request) -> HTMLResponse:
    u = current(request)
    st = store_of(request)
    with st.sessions() as s:
        tree = inventory_tree(st, s)
        hosts = st.hosts_status(s)
    counts: dict[str, int] = {}

    def walk(n: dict[str, Any]) -> None:
        if n.get("kind") == "vm":
            k = n["protection"]["file"]["status"]
            counts[k] = counts.get(k, 0) + 1
        for c in n.get("children", []):
            walk(c)

    walk(tree)
    with st.sessions() as s:
        conns = list(s.scalars(select(Connection).order_by(Connection.name)))
    return page(
        request,
        "inventory.html",
        u,
        tree=tree,
        counts=counts,
        unhealthy=[h for h in hosts if not h["healthy"]],
        connections=conns,
        msg=request.query_params.get("msg"),
        error=request.query_params.get("error"),
    )


@router.post("/connections")
def connection_add(
    request: Request,
    name: str = Form(...),
    kind: str = Form(...),
    url: str = Form(""),
    username: str = Form(""),
    password: str = Form(""),
    csrf: str = Form(""),
) -> Response:
    return change(
        request,
        "administrator",
        csrf,
        lambda st, s, who: st.add_connection(
            s, who, name.strip(), kind, url.strip(), username, password
        ),
        (ValueError, Conflict),
        "/inventory",
        f"connection {name} added; its inventory appears within seconds",
    )


@router.post("/connections/{conn_id}/delete")
def connection_delete(request: Request, conn_id: int, csrf: str = Form("")) -> Response:
    return change(
        request,
        "administrator",
        csrf,
        lambda st, s, who: st.delete_connection(s, who, conn_id),
        (NotFound,),
        "/inventory",
        "connection deleted",
    )


@router.get("/inventory/{node_id}")
def node_page(request: Request, node_id: int) -> HTMLResponse:
    u = current(request)
    st = store_of(request)
    with st.sessions() as s:
        try:
            node = st.node(s, node_id)
        except NotFound:
            raise HTTPException(404, f"inventory node {node_id} not found") from None
        nodes = st.all_nodes(s)
        path = list(reversed(st.ancestors(nodes, node_id)))
        eff = st.effective(s, node_id)
        assigns = st.assignments(s)
        own = {k: assigns.get((node_id, k)) for k in ("file", "network")}
        profiles = {
            k: list(s.scalars(select(Profile).where(Profile.kind == k).order_by(Profile.name)))
            for k in ("file", "network")
        }
        own_view = {
            k: (
                None
                if a is None
                else {"mode": "exclude"}
                if a.excluded
                else {"mode": "profile", "profile_id": a.profile_id}
            )
            for k, a in own.items()
        }
    return page(
        request,
        "node.html",
        u,
        node=node,
        path=path,
        eff=eff,
        own=own_view,
        profiles=profiles,
        msg=request.query_params.get("msg"),
        error=request.query_params.get("error"),
    )


@router.post("/inventory/{node_id}/assign")
def node_assign(
    request: Request,
    node_id: int,
    kind: str = Form(...),
    choice: str = Form(...),
    csrf: str = Form(""),
) -> Response:
    mode, profile_id = (
        ("profile", int(choice.split(":", 1)[1]))
        if choice.startswith("profile:")
        else (choice, None)
    )
    return change(
        request,
        "operator",
        csrf,
        lambda st, s, who: st.assign(s, who, node_id, kind, mode, profile_id),
        (ValueError, NotFound),
        f"/inventory/{node_id}",
        f"{kind} assignment saved",
    )


# ---- profiles and policies -------------------------------------------------------------------


@router.get("/profiles")
def profiles_page(request: Request) -> HTMLResponse:
    u = current(request)
    with store_of(request).sessions() as s:
        profs = {
            k: list(s.scalars(select(Profile).where(Profile.kind == k).order_by(Profile.name)))
            for k in ("file", "network")
        }
    return page(request, "profiles.html", u, profiles=profs, msg=request.query_params.get("msg"))


def _lines(v: str) -> list[str]:
    return [x.strip() for x in v.splitlines() if x.strip()]


def _file_form_to_settings(form: dict[str, Any]) -> dict[str, Any]:
    level = form.get("level", "recommended")
    if level != "custom":
        return {"level": level}
    base = PRESETS["recommended"]
    vals: dict[str, Any] = {}
    for k in (
        "scan_archives",
        "scan_sfx",
        "scan_embedded",
        "on_open",
        "on_execute",
        "on_close_write",
        "backup_before_action",
    ):
        vals[k] = form.get(k) == "on"
    for k in ("max_compound_mb", "scan_time_limit_s"):
        try:
            vals[k] = int(form.get(k, base[k]))
        except ValueError:
            raise ValueError(f"{k}: {form.get(k)!r} is not a whole number") from None
    for k in ("scope", "action", "fallback"):
        vals[k] = form.get(k, base[k])
    vals["detect"] = [d for d in DETECT if form.get(f"detect_{d}") == "on"]
    vals["exclusions"] = {
        k: _lines(form.get(f"excl_{k}", ""))
        for k in ("paths", "regexes", "extensions", "processes")
    }
    # Store only what differs from the preset: the rest follows it.
    own = {k: v for k, v in vals.items() if v != base[k]}
    return {"level": "custom", "settings": own}


def _net_form_to_settings(form: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "attack_detection": form.get("attack_detection") == "on",
        "attack_action": form.get("attack_action"),
        "ids_enabled": form.get("ids_enabled") == "on",
        "ids_action": form.get("ids_action"),
        "ids_categories": [c for c in IDS_CATEGORIES if form.get(f"ids_{c}") == "on"],
        "url_filtering": form.get("url_filtering") == "on",
        "url_block": [c for c in URL_CATEGORIES if form.get(f"url_{c}") == "block"],
        "url_allow": [c for c in URL_CATEGORIES if form.get(f"url_{c}") == "allow"],
        "trusted_urls": _lines(form.get("trusted_urls", "")),
        "failure_mode": form.get("failure_mode"),
    }
    try:
        out["block_minutes"] = int(form.get("block_minutes", "60"))
    except ValueError:
        raise ValueError(
            f"block_minutes: {form.get('block_minutes')!r} is not a whole number"
        ) from None
    excl = []
    for i, line in enumerate(_lines(form.get("exclusions", "")), 1):
        # "10.0.0.0/8 do_not_block" or "vlan 42 do_not_scan"
        parts = line.split()
        mode = parts[-1] if parts[-1] in ("do_not_scan", "do_not_block") else "do_not_scan"
        if parts[0].lower() == "vlan" and len(parts) >= 2:
            if not parts[1].isdigit():
                raise ValueError(f"exclusions line {i}: VLAN {parts[1]!r} is not a number")
            excl.append({"vlan": int(parts[1]), "mode": mode})
        else:
            excl.append({"address": parts[0], "mode": mode})
    out["exclusions"] = excl
    return out


def _profile_view(kind: str, p: Profile | None) -> dict[str, Any]:
    if kind == "file":
        spec = FileProfileSpec.model_validate(p.settings) if p else FileProfileSpec()
        return {"level": spec.level, "values": {k: v["value"] for k, v in spec.effective().items()}}
    nspec = NetworkPolicySpec.model_validate(p.settings) if p else NetworkPolicySpec()
    return {"values": nspec.model_dump()}


@router.get("/profiles/{kind}/{pid}")
def profile_edit(request: Request, kind: str, pid: str) -> HTMLResponse:
    u = current(request)
    if kind not in ("file", "network"):
        raise HTTPException(404, "no such profile kind")
    p = None
    if pid != "new":
        with store_of(request).sessions() as s:
            p = s.get(Profile, int(pid)) if pid.isdigit() else None
        if p is None or p.kind != kind:
            raise HTTPException(404, f"{kind} profile {pid} not found")
    return page(
        request,
        "profile_edit.html",
        u,
        kind=kind,
        profile=p,
        view=_profile_view(kind, p),
        detect=DETECT,
        ids_categories=IDS_CATEGORIES,
        url_categories=URL_CATEGORIES,
        url_content=CONTENT_CATEGORIES,
        error=request.query_params.get("error"),
    )


@router.post("/profiles/{kind}/{pid}")
async def profile_save(request: Request, kind: str, pid: str) -> Response:
    u = current(request, "operator")
    form = dict((await request.form()).items())
    check_csrf(u, str(form.get("csrf", "")))
    st = store_of(request)
    try:
        settings = _file_form_to_settings(form) if kind == "file" else _net_form_to_settings(form)
        with st.sessions.begin() as s:
            p = st.save_profile(
                s,
                f"user:{u.name}",
                kind,
                str(form.get("name", "")).strip(),
                settings,
                None if pid == "new" else int(pid),
            )
    except ValidationError as exc:
        err = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())
        return back(f"/profiles/{kind}/{pid}", error=err)
    except (ValueError, NotFound, Conflict) as exc:
        return back(f"/profiles/{kind}/{pid}", error=str(exc))
    return back("/profiles", msg=f"saved {p.name}")


# ---- services and deployments ----------------------------------------------------------------


def _services(
    request: Request, u: User, msg: str | None, error: str | None, token: str | None = None
) -> HTMLResponse:
    st = store_of(request)
    with st.sessions() as s:
        svcs = list(s.scalars(select(Service)))
        deps = list(s.scalars(select(Deployment).order_by(Deployment.id)))
        hosts = st.hosts_status(s)
        healthy = {d.id: st.healthy(d) for d in deps}
    return page(
        request,
        "services.html",
        u,
        services=svcs,
        deployments=deps,
        healthy=healthy,
        hosts=hosts,
        msg=msg,
        error=error,
        token=token,
    )


@router.get("/services")
def services_page(request: Request) -> HTMLResponse:
    q = request.query_params
    return _services(request, current(request), q.get("msg"), q.get("error"))


@router.post("/services/register")
def service_register(
    request: Request,
    kind: str = Form(...),
    traffic_mode: str = Form(""),
    csrf: str = Form(""),
) -> Response:
    return change(
        request,
        "administrator",
        csrf,
        lambda st, s, who: st.register_service(s, who, kind, traffic_mode or None),
        (ValueError, Conflict),
        "/services",
        f"{kind} protection registered",
    )


@router.post("/services/unregister")
def service_unregister(request: Request, kind: str = Form(...), csrf: str = Form("")) -> Response:
    return change(
        request,
        "administrator",
        csrf,
        lambda st, s, who: st.unregister_service(s, who, kind),
        (NotFound,),
        "/services",
        f"{kind} protection unregistered",
    )


@router.post("/deployments")
def deployment_create(
    request: Request, host_node_id: int = Form(...), csrf: str = Form("")
) -> Response:
    u = current(request, "operator")
    check_csrf(u, csrf)
    st = store_of(request)
    try:
        with st.sessions.begin() as s:
            token, dep = st.create_deployment(s, f"user:{u.name}", host_node_id)
            host = dep.host_name
    except (ValueError, NotFound, Conflict) as exc:
        return back("/services", error=str(exc))
    # The token is shown once, on this page, never stored in clear.
    return _services(request, u, f"deployment for {host} created", None, token)


@router.post("/deployments/{dep_id}/revoke")
def deployment_revoke(request: Request, dep_id: int, csrf: str = Form("")) -> Response:
    return change(
        request,
        "operator",
        csrf,
        lambda st, s, who: st.revoke_deployment(s, who, dep_id),
        (NotFound,),
        "/services",
        f"deployment {dep_id} revoked",
    )


# ---- events, backup/quarantine, blocked addresses, audit -------------------------------------


@router.get("/events")
def events_page(request: Request) -> HTMLResponse:
    u = current(request)
    q = request.query_params
    f = {k: q.get(k, "") for k in ("since", "until", "vm", "host", "type", "severity", "detection")}
    error = None
    rows: list[EventRow] = []
    nxt = None
    try:
        sev = int(f["severity"]) if f["severity"] else None
        before = int(q["before"]) if q.get("before", "").isdigit() else None
        with store_of(request).sessions() as s:
            rows, nxt = store_of(request).query_events(
                s,
                since=parse_time(f["since"], "since"),
                until=parse_time(f["until"], "until"),
                vm=f["vm"] or None,
                host=f["host"] or None,
                event_type=f["type"] or None,
                severity=sev,
                detection=f["detection"] or None,
                limit=50,
                before_seq=before,
            )
    except HTTPException as exc:
        error = str(exc.detail)
    except ValueError as exc:
        error = str(exc)
    next_q = urlencode({**{k: v for k, v in f.items() if v}, "before": nxt}) if nxt else None
    return page(
        request,
        "events.html",
        u,
        rows=rows,
        f=f,
        error=error,
        next_q=next_q,
        vm_names=_vm_names(request),
    )


def _vm_names(request: Request) -> dict[str, str]:
    """Events name VMs by identity (BIOS UUID, lab name); the console shows the inventory name."""
    out: dict[str, str] = {}
    with store_of(request).sessions() as s:
        for n in s.scalars(select(Node).where(Node.kind == "vm")):
            for k in ("uuid", "instance_uuid"):
                v = (n.attrs or {}).get(k)
                if v:
                    out[str(v)] = n.name
            out.setdefault(n.key, n.name)
    return out


@router.get("/events/{event_id}")
def event_page(request: Request, event_id: str) -> HTMLResponse:
    u = current(request)
    with store_of(request).sessions() as s:
        e = s.scalar(select(EventRow).where(EventRow.id == event_id))
    if e is None:
        raise HTTPException(404, f"event {event_id} not found")
    return page(request, "event.html", u, e=e, body=json.loads(e.body))


def _recent(request: Request, types: tuple[str, ...], limit: int = 5000) -> list[dict[str, Any]]:
    with store_of(request).sessions() as s:
        rows = s.scalars(
            select(EventRow)
            .where(EventRow.event_type.in_(types))
            .order_by(EventRow.seq.desc())
            .limit(limit)
        )
        return [{"row": r, "ev": json.loads(r.body)} for r in rows]


@router.get("/quarantine")
def quarantine_page(request: Request) -> HTMLResponse:
    """Backup copies and quarantined files, as reported by the SVMs' file events."""
    u = current(request)
    items = []
    for x in _recent(request, ("file",)):
        f = x["ev"].get("file") or {}
        action = str(f.get("action") or x["ev"].get("action") or "")
        backup = x["ev"].get("backup_id") or f.get("backup_id")
        if (
            action in ("quarantine", "quarantined", "delete", "deleted", "disinfect", "disinfected")
            or backup
        ):
            items.append({**x, "file": f, "action": action, "backup": backup})
    return page(request, "quarantine.html", u, items=items)


@router.get("/blocked")
def blocked_page(request: Request) -> HTMLResponse:
    """Source addresses blocked for a time: the filter's `block` events (kernel ipset entries)
    and attacks whose action was to block the source (docs/events.md)."""
    u = current(request)
    now = time.time()
    items = []
    for x in _recent(request, ("block", "attack")):
        ev = x["ev"]
        if x["row"].event_type == "block":
            blk = ev.get("block") if isinstance(ev.get("block"), dict) else {}
            seconds = blk.get("seconds")
            failed = blk.get("action") == "block_failed"
            how = "kernel block set" + (
                f" {blk['scope'].get('set')}" if isinstance(blk.get("scope"), dict) else ""
            )
            note = str(blk.get("error") or "") if failed else ""
        else:
            att = ev.get("attack") if isinstance(ev.get("attack"), dict) else {}
            if att.get("action") != "block" or att.get("state") == "ended":
                continue
            minutes = att.get("block_minutes")
            seconds = float(minutes) * 60 if minutes else None
            failed = bool(att.get("not_blocked"))
            how = "attack: " + str(att.get("name", ""))
            note = str(att.get("not_blocked") or "")
        until = x["row"].ts + float(seconds) if seconds and not failed else None
        state = "not blocked" if failed else ("blocked" if until and until > now else "expired")
        items.append(
            {
                **x,
                "address": ev.get("src_ip"),
                "until": until,
                "state": state,
                "how": how,
                "note": note,
            }
        )
    return page(request, "blocked.html", u, items=items)


@router.get("/users")
def users_page(request: Request) -> HTMLResponse:
    u = current(request, "administrator")
    return _users(request, u, None)


def _users(request: Request, u: User, token: str | None, msg: str | None = None) -> HTMLResponse:
    with store_of(request).sessions() as s:
        users = list(s.scalars(select(DbUser).order_by(DbUser.name)))
        tokens = list(s.scalars(select(ApiToken).order_by(ApiToken.id.desc())))
    return page(
        request,
        "users.html",
        u,
        users=users,
        tokens=tokens,
        token=token,
        msg=msg or request.query_params.get("msg"),
        error=request.query_params.get("error"),
    )


@router.post("/users")
def user_add(
    request: Request,
    name: str = Form(...),
    role: str = Form(...),
    password: str = Form(...),
    csrf: str = Form(""),
) -> Response:
    return change(
        request,
        "administrator",
        csrf,
        lambda _st, s, who: auth.add_user(s, name.strip(), password, role, who),
        (ValueError,),
        "/users",
        f"user {name} added",
    )


@router.post("/tokens")
def token_add(
    request: Request, role: str = Form(...), name: str = Form(""), csrf: str = Form("")
) -> Response:
    u = current(request, "administrator")
    check_csrf(u, csrf)
    try:
        with store_of(request).sessions.begin() as s:
            token, _row = auth.create_token(s, role, f"user:{u.name}", name.strip())
    except ValueError as exc:
        return back("/users", error=str(exc))
    # Shown once, on this answer; only its hash is stored.
    return _users(request, u, token, msg="token created")


@router.post("/tokens/{token_id}/revoke")
def token_revoke(request: Request, token_id: int, csrf: str = Form("")) -> Response:
    u = current(request, "administrator")
    check_csrf(u, csrf)
    with store_of(request).sessions.begin() as s:
        row = s.get(ApiToken, token_id)
        if row is None:
            return back("/users", error=f"token {token_id} not found")
        row.revoked = True
        auth.audit(s, f"user:{u.name}", "token.revoke", f"token:{token_id}", {})
    return back("/users", msg=f"token {token_id} revoked")


@router.get("/audit")
def audit_page(request: Request) -> HTMLResponse:
    u = current(request, "administrator")
    with store_of(request).sessions() as s:
        rows = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(300)))
    return page(request, "audit.html", u, rows=rows)


def mount(app: FastAPI) -> None:
    app.include_router(router)

    @app.exception_handler(Login)
    async def _login(request: Request, _exc: Login) -> Response:
        return RedirectResponse("/login", status_code=303)

    _ = HTMLResponse
