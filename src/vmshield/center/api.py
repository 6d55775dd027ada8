"""REST API, version 1 (`/api/v1`). Every endpoint states the role it needs; SVM endpoints take
the client certificate (mutual TLS) and nothing else."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from vmshield.center import auth
from vmshield.center.db import (
    ApiToken,
    AuditEntry,
    Connection,
    Deployment,
    EventRow,
    Exporter,
    Node,
    Profile,
    Service,
    User,
)
from vmshield.center.pki import fingerprint_der
from vmshield.center.store import Store

MAX_BATCH = 5000
MAX_BODY = 32 * 1024 * 1024
MAX_WAIT = 30.0


@dataclass
class Principal:
    actor: str
    role: str


def ctx(request: Request) -> Any:
    return request.app.state.ctx


def db_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed if the handler returns, rolled back if it raises."""
    store: Store = ctx(request).store
    with store.sessions.begin() as s:
        yield s


def _bearer(request: Request) -> str | None:
    h = request.headers.get("authorization", "")
    if h[:7].lower() == "bearer ":
        return h[7:].strip()
    return None


def need(role: str) -> Callable[..., Principal]:
    def dep(request: Request) -> Principal:
        token = _bearer(request)
        if not token:
            raise HTTPException(
                401, "authentication required", headers={"WWW-Authenticate": "Bearer"}
            )
        with ctx(request).store.sessions() as s:
            found = auth.token_principal(s, token)
        if found is None:
            raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})
        actor, have = found
        if not auth.role_at_least(have, role):
            raise HTTPException(403, f"role {have} may not do this (needs {role})")
        return Principal(actor, have)

    return dep


VIEWER = Depends(need("viewer"))
OPERATOR = Depends(need("operator"))
ADMIN = Depends(need("administrator"))


def peer_fingerprint(request: Request) -> str | None:
    der = request.scope.get("state", {}).get("vmshield_peer_cert")
    return fingerprint_der(der) if der else None


def svm_identity(request: Request) -> int:
    """The deployment id of the SVM whose verified client certificate made this connection."""
    fp = peer_fingerprint(request)
    if fp is None:
        raise HTTPException(401, "client certificate required (mutual TLS)")
    with ctx(request).store.sessions() as s:
        dep = ctx(request).store.svm_by_cert(s, fp)
        if dep is None:
            raise HTTPException(403, "certificate is not that of an enrolled SVM")
        request.state.svm_host = dep.host_name
        return dep.id


SVM = Depends(svm_identity)
# scope="function": commit before the response is sent, so a 2xx means it is stored.
DB = Depends(db_session, scope="function")

router = APIRouter(prefix="/api/v1")


# ---- identity, users, tokens, audit ---------------------------------------------------------


@router.get("/whoami", tags=["users"])
def whoami(p: Principal = VIEWER) -> dict[str, str]:
    return {"actor": p.actor, "role": p.role}


class UserIn(BaseModel):
    name: str
    password: str = Field(min_length=8, max_length=1024)
    role: Literal["viewer", "operator", "administrator"]


@router.get("/users", tags=["users"])
def list_users(p: Principal = ADMIN, s: Session = DB) -> list[dict[str, Any]]:
    return [
        {"id": u.id, "name": u.name, "role": u.role, "disabled": u.disabled}
        for u in s.scalars(select(User).order_by(User.name))
    ]


@router.post("/users", status_code=201, tags=["users"])
def create_user(body: UserIn, p: Principal = ADMIN, s: Session = DB) -> dict[str, Any]:
    u = auth.add_user(s, body.name, body.password, body.role, p.actor)
    return {"id": u.id, "name": u.name, "role": u.role}


class TokenIn(BaseModel):
    role: Literal["viewer", "operator", "administrator"]
    name: str = Field(default="", max_length=128)
    ttl_seconds: float | None = Field(default=None, gt=0)


@router.post("/tokens", status_code=201, tags=["users"])
def create_token(body: TokenIn, p: Principal = ADMIN, s: Session = DB) -> dict[str, Any]:
    token, row = auth.create_token(s, body.role, p.actor, body.name, body.ttl_seconds)
    return {"id": row.id, "token": token, "role": row.role}


@router.delete("/tokens/{token_id}", status_code=204, tags=["users"])
def revoke_token(token_id: int, p: Principal = ADMIN, s: Session = DB) -> None:
    row = s.get(ApiToken, token_id)
    if row is None:
        raise HTTPException(404, f"token {token_id} not found")
    row.revoked = True
    auth.audit(s, p.actor, "token.revoke", f"token:{token_id}", {})


@router.get("/audit", tags=["users"])
def audit_log(
    limit: int = Query(100, ge=1, le=1000),
    p: Principal = ADMIN,
    s: Session = DB,
) -> list[dict[str, Any]]:
    rows = s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit))
    return [
        {"ts": a.ts, "actor": a.actor, "action": a.action, "target": a.target, "detail": a.detail}
        for a in rows
    ]


# ---- connections and inventory --------------------------------------------------------------


class ConnectionIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    kind: Literal["vsphere", "libvirt", "static"]
    url: str = Field(default="", max_length=1024)
    username: str = Field(default="", max_length=256)
    password: str = Field(default="", max_length=4096)
    options: dict[str, Any] = Field(default_factory=dict)


def _conn_out(c: Connection) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "kind": c.kind,
        "url": c.url,
        "username": c.username,
        "has_secret": bool(c.secret_enc),
        "options": c.options,
        "last_sync": c.last_sync,
        "last_error": c.last_error,
    }


@router.get("/connections", tags=["inventory"])
def list_connections(p: Principal = VIEWER, s: Session = DB) -> list[dict[str, Any]]:
    return [_conn_out(c) for c in s.scalars(select(Connection).order_by(Connection.name))]


@router.post("/connections", status_code=201, tags=["inventory"])
def add_connection(
    body: ConnectionIn, request: Request, p: Principal = ADMIN, s: Session = DB
) -> dict[str, Any]:
    c = ctx(request).store.add_connection(
        s, p.actor, body.name, body.kind, body.url, body.username, body.password, body.options
    )
    return _conn_out(c)


@router.delete("/connections/{conn_id}", status_code=204, tags=["inventory"])
def delete_connection(
    conn_id: int, request: Request, p: Principal = ADMIN, s: Session = DB
) -> None:
    ctx(request).store.delete_connection(s, p.actor, conn_id)


def node_out(n: Node) -> dict[str, Any]:
    return {
        "id": n.id,
        "kind": n.kind,
        "key": n.key,
        "name": n.name,
        "parent_id": n.parent_id,
        "connection_id": n.connection_id,
        "attrs": n.attrs,
    }


def inventory_tree(store: Store, s: Session) -> dict[str, Any]:
    nodes = store.all_nodes(s)
    assigns = store.assignments(s)
    profiles = {p.id: p for p in s.scalars(select(Profile))}
    children: dict[int | None, list[Node]] = {}
    for n in nodes.values():
        children.setdefault(n.parent_id, []).append(n)

    def build(n: Node, depth: int) -> dict[str, Any]:
        d = node_out(n)
        a_file = assigns.get((n.id, "file"))
        a_net = assigns.get((n.id, "network"))
        d["assigned"] = {
            k: _assigned_label(a, profiles) for k, a in (("file", a_file), ("network", a_net))
        }
        if n.kind == "vm":
            eff = store.effective(s, n.id, nodes, assigns, profiles)
            d["protection"] = {k: _status_brief(v) for k, v in eff.items()}
        kids = sorted(children.get(n.id, []), key=lambda c: (c.kind, c.name))
        d["children"] = [build(c, depth + 1) for c in kids] if depth < 64 else []
        return d

    roots = [n for n in nodes.values() if n.parent_id is None and n.kind == "root"]
    return build(roots[0], 0) if roots else {}


def _assigned_label(a: Any, profiles: dict[int, Profile]) -> str | None:
    """What a node itself says: 'excluded', a profile name, or None (inherits)."""
    if a is None:
        return None
    if a.excluded:
        return "excluded"
    p = profiles.get(a.profile_id) if a.profile_id is not None else None
    return p.name if p is not None else None


def _status_brief(eff: dict[str, Any]) -> dict[str, Any]:
    out = {"status": eff["status"], "source": eff["source"]}
    if "profile" in eff:
        out["profile"] = eff["profile"]["name"]
    return out


@router.get("/inventory", tags=["inventory"])
def get_inventory(request: Request, p: Principal = VIEWER, s: Session = DB) -> dict[str, Any]:
    return inventory_tree(ctx(request).store, s)


@router.get("/inventory/nodes/{node_id}", tags=["inventory"])
def get_node(
    node_id: int, request: Request, p: Principal = VIEWER, s: Session = DB
) -> dict[str, Any]:
    store: Store = ctx(request).store
    d = node_out(store.node(s, node_id))
    d["effective"] = store.effective(s, node_id)
    return d


@router.get("/inventory/nodes/{node_id}/effective", tags=["profiles"])
def node_effective(
    node_id: int, request: Request, p: Principal = VIEWER, s: Session = DB
) -> dict[str, Any]:
    store: Store = ctx(request).store
    store.node(s, node_id)
    return store.effective(s, node_id)


@router.get("/vms", tags=["inventory"])
def list_vms(
    request: Request,
    status: Literal["protected", "excluded", "unprotected"] | None = None,
    p: Principal = VIEWER,
    s: Session = DB,
) -> list[dict[str, Any]]:
    """Every VM with its file and network protection status; `status` filters on the file one
    (e.g. `?status=unprotected`: what no profile covers)."""
    store: Store = ctx(request).store
    nodes = store.all_nodes(s)
    assigns = store.assignments(s)
    profiles = {x.id: x for x in s.scalars(select(Profile))}
    out = []
    for n in sorted((n for n in nodes.values() if n.kind == "vm"), key=lambda n: n.name):
        eff = store.effective(s, n.id, nodes, assigns, profiles)
        if status is not None and eff["file"]["status"] != status:
            continue
        out.append({**node_out(n), "protection": {k: _status_brief(v) for k, v in eff.items()}})
    return out


@router.get("/vms/{ident}/effective", tags=["profiles"])
def vm_effective(
    ident: str, request: Request, p: Principal = VIEWER, s: Session = DB
) -> dict[str, Any]:
    """A VM (by node id, BIOS/instance UUID, key or name): effective profile and policy, each
    setting with the node it came from."""
    store: Store = ctx(request).store
    vm = store.find_vm(s, ident)
    return {"vm": node_out(vm), **store.effective(s, vm.id)}


class AssignIn(BaseModel):
    mode: Literal["profile", "exclude", "inherit"]
    profile_id: int | None = None


@router.put("/inventory/nodes/{node_id}/assignment/{kind}", tags=["profiles"])
def assign(
    node_id: int,
    kind: Literal["file", "network"],
    body: AssignIn,
    request: Request,
    p: Principal = OPERATOR,
    s: Session = DB,
) -> dict[str, Any]:
    store: Store = ctx(request).store
    store.assign(s, p.actor, node_id, kind, body.mode, body.profile_id)
    s.flush()
    return store.effective(s, node_id)


# ---- profiles and policies -------------------------------------------------------------------


class ProfileIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    settings: dict[str, Any] = Field(default_factory=dict)


def profile_out(p: Profile) -> dict[str, Any]:
    return {
        "id": p.id,
        "kind": p.kind,
        "name": p.name,
        "settings": p.settings,
        "revision": p.revision,
        "updated_at": p.updated_at,
    }


@router.get("/profiles/{kind}", tags=["profiles"])
def list_profiles(
    kind: Literal["file", "network"], p: Principal = VIEWER, s: Session = DB
) -> list[dict[str, Any]]:
    return [
        profile_out(x)
        for x in s.scalars(select(Profile).where(Profile.kind == kind).order_by(Profile.name))
    ]


@router.post("/profiles/{kind}", status_code=201, tags=["profiles"])
def create_profile(
    kind: Literal["file", "network"],
    body: ProfileIn,
    request: Request,
    p: Principal = OPERATOR,
    s: Session = DB,
) -> dict[str, Any]:
    return profile_out(ctx(request).store.save_profile(s, p.actor, kind, body.name, body.settings))


@router.get("/profiles/{kind}/{profile_id}", tags=["profiles"])
def get_profile(
    kind: Literal["file", "network"],
    profile_id: int,
    p: Principal = VIEWER,
    s: Session = DB,
) -> dict[str, Any]:
    x = s.get(Profile, profile_id)
    if x is None or x.kind != kind:
        raise HTTPException(404, f"{kind} profile {profile_id} not found")
    return profile_out(x)


@router.put("/profiles/{kind}/{profile_id}", tags=["profiles"])
def update_profile(
    kind: Literal["file", "network"],
    profile_id: int,
    body: ProfileIn,
    request: Request,
    p: Principal = OPERATOR,
    s: Session = DB,
) -> dict[str, Any]:
    return profile_out(
        ctx(request).store.save_profile(s, p.actor, kind, body.name, body.settings, profile_id)
    )


@router.delete("/profiles/{kind}/{profile_id}", status_code=204, tags=["profiles"])
def delete_profile(
    kind: Literal["file", "network"],
    profile_id: int,
    request: Request,
    p: Principal = OPERATOR,
    s: Session = DB,
) -> None:
    ctx(request).store.delete_profile(s, p.actor, profile_id)


# ---- services, deployments, hosts ------------------------------------------------------------


class ServiceIn(BaseModel):
    kind: Literal["file", "network"]
    traffic_mode: Literal["standard", "monitoring"] | None = None


@router.get("/services", tags=["services"])
def list_services(p: Principal = VIEWER, s: Session = DB) -> list[dict[str, Any]]:
    return [
        {"kind": x.kind, "traffic_mode": x.traffic_mode, "registered_at": x.registered_at}
        for x in s.scalars(select(Service))
    ]


@router.post("/services", status_code=201, tags=["services"])
def register_service(
    body: ServiceIn, request: Request, p: Principal = ADMIN, s: Session = DB
) -> dict[str, Any]:
    x = ctx(request).store.register_service(s, p.actor, body.kind, body.traffic_mode)
    return {"kind": x.kind, "traffic_mode": x.traffic_mode}


@router.delete("/services/{kind}", status_code=204, tags=["services"])
def unregister_service(kind: str, request: Request, p: Principal = ADMIN, s: Session = DB) -> None:
    ctx(request).store.unregister_service(s, p.actor, kind)


def deployment_out(store: Store, d: Deployment) -> dict[str, Any]:
    return {
        "id": d.id,
        "host_node_id": d.host_node_id,
        "host": d.host_name,
        "state": d.state,
        "enrolled_at": d.enrolled_at,
        "last_heartbeat": d.last_heartbeat,
        "version": d.version,
        "db_versions": d.db_versions,
        "load": d.load,
        "health": d.health,
        "healthy": store.healthy(d),
    }


class DeploymentIn(BaseModel):
    host_node_id: int


@router.get("/deployments", tags=["services"])
def list_deployments(
    request: Request, p: Principal = VIEWER, s: Session = DB
) -> list[dict[str, Any]]:
    store: Store = ctx(request).store
    return [deployment_out(store, d) for d in s.scalars(select(Deployment).order_by(Deployment.id))]


@router.post("/deployments", status_code=201, tags=["services"])
def create_deployment(
    body: DeploymentIn, request: Request, p: Principal = OPERATOR, s: Session = DB
) -> dict[str, Any]:
    store: Store = ctx(request).store
    token, d = store.create_deployment(s, p.actor, body.host_node_id)
    return {**deployment_out(store, d), "enrolment_token": token}


@router.delete("/deployments/{dep_id}", status_code=204, tags=["services"])
def revoke_deployment(
    dep_id: int, request: Request, p: Principal = OPERATOR, s: Session = DB
) -> None:
    ctx(request).store.revoke_deployment(s, p.actor, dep_id)


@router.get("/hosts", tags=["services"])
def hosts(request: Request, p: Principal = VIEWER, s: Session = DB) -> list[dict[str, Any]]:
    """Every host and whether it has a healthy SVM."""
    return ctx(request).store.hosts_status(s)


@router.put("/databases", tags=["services"])
def set_db_versions(
    body: dict[str, str],
    request: Request,
    p: Principal = OPERATOR,
    s: Session = DB,
) -> dict[str, str]:
    """The signature and rule database versions SVMs should run (told to them with config)."""
    if len(body) > 32 or any(len(k) > 64 or len(v) > 128 for k, v in body.items()):
        raise HTTPException(422, "databases: at most 32 names of 64 chars, versions of 128")
    store: Store = ctx(request).store
    store.set_meta(s, "db_versions", body)
    store.bump_config(s)
    auth.audit(s, p.actor, "databases.set", "databases", body)
    return body


# ---- enrolment and the SVM endpoints (mutual TLS) -------------------------------------------


@router.get("/enroll/ca", tags=["svm"])
def enrol_ca(request: Request) -> Response:
    """The CA certificate (public); the SVM checks it against the fingerprint in its token."""
    return Response(ctx(request).pki.ca_pem(), media_type="application/x-pem-file")


class EnrolIn(BaseModel):
    token: str = Field(min_length=8, max_length=512)
    csr: str = Field(min_length=64, max_length=16384)


@router.post("/enroll", tags=["svm"])
def enrol(body: EnrolIn, request: Request, s: Session = DB) -> dict[str, Any]:
    client = request.client.host if request.client else "?"
    # Guessing tokens is rate limited like passwords.
    # Per address, not global: a stranger's bad tokens must not lock every SVM out.
    if auth.address_blocked(s, client):
        raise HTTPException(429, "too many failed enrolments; wait and retry")
    store: Store = ctx(request).store
    try:
        dep, cert = store.enrol(s, body.token, body.csr.encode())
    except PermissionError as exc:
        with store.sessions.begin() as s2:
            auth.record_failure(s2, client)
            auth.audit(s2, f"addr:{client}", "deployment.enrol_refused", "enrol", {})
        raise HTTPException(403, str(exc)) from None
    return {
        "deployment": dep.id,
        "host": dep.host_name,
        "certificate": cert.decode(),
        "ca": ctx(request).pki.ca_pem().decode(),
    }


class HeartbeatIn(BaseModel):
    version: str = Field(default="", max_length=64)
    db_versions: dict[str, str] = Field(default_factory=dict)
    load: dict[str, float] = Field(default_factory=dict)
    health: Literal["ok", "degraded", "failed"] = "ok"
    detail: dict[str, str] = Field(default_factory=dict)


@router.post("/svm/heartbeat", tags=["svm"])
def heartbeat(
    body: HeartbeatIn, request: Request, dep_id: int = SVM, s: Session = DB
) -> dict[str, Any]:
    store: Store = ctx(request).store
    dep = s.get(Deployment, dep_id)
    assert dep is not None
    store.heartbeat(s, dep, body.model_dump())
    return {"config_version": store.config_version(s)}


@router.get("/svm/config", tags=["svm"])
async def svm_config(
    request: Request,
    since: int = Query(0, ge=0),
    wait: float = Query(0, ge=0, le=MAX_WAIT),
    host: str | None = None,
    dep_id: int = SVM,
) -> dict[str, Any]:
    """This SVM's configuration. With `since` and `wait`: long-poll, answering as soon as the
    config version passes `since` (or after `wait` seconds with the current one). The version
    lives in the database, so a change made on any replica wakes every SVM."""
    store: Store = ctx(request).store

    def current() -> tuple[int, str]:
        with store.sessions() as s:
            d = s.get(Deployment, dep_id)
            assert d is not None
            return store.config_version(s), d.host_name

    version, own_host = await run_in_threadpool(current)
    if host is not None and host != own_host:
        raise HTTPException(403, f"this SVM serves host {own_host!r} only")
    deadline = time.monotonic() + wait
    while version <= since and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        if await request.is_disconnected():
            break
        version, _ = await run_in_threadpool(current)

    def build() -> dict[str, Any]:
        with store.sessions() as s:
            d = s.get(Deployment, dep_id)
            assert d is not None
            return store.svm_config(s, d)

    return await run_in_threadpool(build)


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and int(length) > MAX_BODY:
        raise HTTPException(413, f"request body larger than {MAX_BODY} bytes")
    chunks = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_BODY:
            raise HTTPException(413, f"request body larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Batch(msgspec.Struct):
    events: list[Any]  # each checked on its own: one bad event does not sink the batch


@router.post("/svm/events", tags=["svm", "events"])
async def svm_events(request: Request, dep_id: int = SVM) -> dict[str, Any]:
    """A batch of events (`{"events": [EVE objects]}`), idempotent by event id: send again after
    a lost answer and nothing is stored twice."""
    raw = await _read_body(request)
    try:
        batch = msgspec.json.decode(raw, type=_Batch)
    except (
        msgspec.DecodeError,
        UnicodeDecodeError,
    ) as exc:  # msgspec raises the latter on bad UTF-8
        raise HTTPException(422, f"body: {exc}") from None
    if len(batch.events) > MAX_BATCH:
        raise HTTPException(413, f"at most {MAX_BATCH} events per batch")
    c = ctx(request)
    store: Store = c.store

    # The host comes from the certificate check above, not from anything the SVM says.
    res = await run_in_threadpool(store.ingest, batch.events, request.state.svm_host)
    c.metrics.ingested.inc(res.accepted)
    c.metrics.duplicates.inc(res.duplicates)
    c.metrics.rejected.inc(len(res.rejected))
    return {"accepted": res.accepted, "duplicates": res.duplicates, "rejected": res.rejected}


# ---- events ---------------------------------------------------------------------------------


def event_out(e: EventRow) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "id": e.id,
        "ts": e.ts,
        "event_type": e.event_type,
        "host": e.host,
        "vm": e.vm,
        "severity": e.severity,
        "detection": e.detection,
        "event": msgspec.json.decode(e.body),
    }


def parse_time(v: str | None, name: str) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except ValueError:
        pass
    import datetime as dt

    try:
        t = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise HTTPException(422, f"{name}: {v!r} is not epoch seconds or ISO 8601") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


@router.get("/events", tags=["events"])
def list_events(
    request: Request,
    since: str | None = None,
    until: str | None = None,
    vm: str | None = None,
    host: str | None = None,
    type: str | None = None,  # noqa: A002 - the query parameter's public name
    severity: int | None = Query(None, ge=1, le=4),
    max_severity: int | None = Query(None, ge=1, le=4),
    detection: str | None = Query(None, max_length=256),
    limit: int = Query(100, ge=1, le=1000),
    before: int | None = None,
    p: Principal = VIEWER,
    s: Session = DB,
) -> dict[str, Any]:
    """Newest first. `next` is the `before` value for the following page (None: last page)."""
    rows, nxt = ctx(request).store.query_events(
        s,
        since=parse_time(since, "since"),
        until=parse_time(until, "until"),
        vm=vm,
        host=host,
        event_type=type,
        severity=severity,
        max_severity=max_severity,
        detection=detection,
        limit=limit,
        before_seq=before,
    )
    return {"events": [event_out(e) for e in rows], "next": nxt}


@router.get("/events/{event_id}", tags=["events"])
def get_event(event_id: str, p: Principal = VIEWER, s: Session = DB) -> dict[str, Any]:
    e = s.scalar(select(EventRow).where(EventRow.id == event_id))
    if e is None:
        raise HTTPException(404, f"event {event_id} not found")
    return event_out(e)


class RetentionIn(BaseModel):
    max_age_days: float | None = Field(default=None, gt=0)
    max_events: int | None = Field(default=None, gt=0)
    max_mb: float | None = Field(default=None, gt=0)


@router.get("/settings/retention", tags=["events"])
def get_retention(request: Request, p: Principal = VIEWER, s: Session = DB) -> dict[str, Any]:
    return ctx(request).store.get_meta(s, "retention", {}) or {}


@router.put("/settings/retention", tags=["events"])
def set_retention(
    body: RetentionIn, request: Request, p: Principal = ADMIN, s: Session = DB
) -> dict[str, Any]:
    v = body.model_dump(exclude_none=True)
    ctx(request).store.set_meta(s, "retention", v)
    auth.audit(s, p.actor, "retention.set", "events", v)
    return v


@router.post("/settings/retention/run", tags=["events"])
def run_retention(request: Request, p: Principal = ADMIN, s: Session = DB) -> dict[str, int]:
    return {"removed": ctx(request).store.retention(s)}


class ExporterIn(BaseModel):
    name: str = Field(min_length=1, max_length=128)
    kind: Literal["syslog", "jsonl"]
    transport: Literal["udp", "tcp", "tls"] = "udp"
    address: str = Field(min_length=1, max_length=512)
    fmt: Literal["cef", "json"] = "cef"
    ca_pem: str | None = Field(default=None, max_length=65536)  # for TLS: whom to trust
    from_start: bool = False  # ship events already stored, not only new ones


def exporter_out(x: Exporter) -> dict[str, Any]:
    return {
        "id": x.id,
        "name": x.name,
        "kind": x.kind,
        "transport": x.transport,
        "address": x.address,
        "fmt": x.fmt,
        "cursor": x.cursor,
        "enabled": x.enabled,
        "last_error": x.last_error,
    }


@router.get("/exporters", tags=["events"])
def list_exporters(p: Principal = ADMIN, s: Session = DB) -> list[dict[str, Any]]:
    return [exporter_out(x) for x in s.scalars(select(Exporter).order_by(Exporter.name))]


@router.post("/exporters", status_code=201, tags=["events"])
def add_exporter(
    body: ExporterIn, request: Request, p: Principal = ADMIN, s: Session = DB
) -> dict[str, Any]:
    from vmshield.center.export import validate_exporter

    validate_exporter(body.kind, body.transport, body.address)
    if s.scalar(select(Exporter).where(Exporter.name == body.name)):
        raise HTTPException(409, f"exporter {body.name!r} already exists")
    from sqlalchemy import func

    cursor = 0 if body.from_start else int(s.scalar(select(func.max(EventRow.seq))) or 0)
    x = Exporter(
        name=body.name,
        kind=body.kind,
        transport=body.transport,
        address=body.address,
        fmt=body.fmt,
        options={"ca_pem": body.ca_pem} if body.ca_pem else {},
        cursor=cursor,
    )
    s.add(x)
    s.flush()
    auth.audit(s, p.actor, "exporter.add", f"exporter:{body.name}", exporter_out(x))
    return exporter_out(x)


@router.delete("/exporters/{exp_id}", status_code=204, tags=["events"])
def delete_exporter(exp_id: int, p: Principal = ADMIN, s: Session = DB) -> None:
    x = s.get(Exporter, exp_id)
    if x is None:
        raise HTTPException(404, f"exporter {exp_id} not found")
    s.delete(x)
    auth.audit(s, p.actor, "exporter.delete", f"exporter:{x.name}", {})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
