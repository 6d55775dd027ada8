"""The center's database: SQLAlchemy 2 models, engine set-up, Alembic migrations.

SQLite (one file in the data directory, WAL) by default; PostgreSQL by URL. Everything a replica
needs to share with another (sessions, tokens, login attempts, config version) lives here, so
several replicas can serve one PostgreSQL database.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

# BIGINT autoincrement on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class ConsoleSession(Base):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    csrf: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    expires_at: Mapped[float] = mapped_column(Float)


class LoginAttempt(Base):
    __tablename__ = "login_attempts"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(200), index=True)
    ts: Mapped[float] = mapped_column(Float, index=True)


class AuditEntry(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(256), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class Meta(Base):
    """Small key/value settings: config version, retention, database versions."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    num: Mapped[int] = mapped_column(BigInteger, default=0)  # counters, bumped atomically


class Connection(Base):
    __tablename__ = "connections"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # vsphere | libvirt | static
    url: Mapped[str] = mapped_column(String(1024), default="")
    username: Mapped[str] = mapped_column(String(256), default="")
    secret_enc: Mapped[str] = mapped_column(Text, default="")  # Fernet, key in the data dir
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    last_sync: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


class Node(Base):
    """One node of the inventory tree: root, connection, datacenter, folder, cluster, host, vm."""

    __tablename__ = "inventory_nodes"
    __table_args__ = (UniqueConstraint("connection_id", "key", name="uq_node_conn_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), nullable=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(256))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("inventory_nodes.id", ondelete="CASCADE"), nullable=True, index=True
    )
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)


class Profile(Base):
    """A protection profile (kind 'file') or a network policy (kind 'network')."""

    __tablename__ = "profiles"
    __table_args__ = (UniqueConstraint("kind", "name", name="uq_profile_kind_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[float] = mapped_column(Float, default=time.time)


class Assignment(Base):
    """What a node says for one kind: a profile, an exclusion, or nothing (inherit)."""

    __tablename__ = "assignments"
    __table_args__ = (UniqueConstraint("node_id", "kind", name="uq_assignment_node_kind"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("inventory_nodes.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    profile_id: Mapped[int | None] = mapped_column(
        ForeignKey("profiles.id", ondelete="RESTRICT"), nullable=True
    )
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)


class Service(Base):
    __tablename__ = "services"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), unique=True)  # file | network
    traffic_mode: Mapped[str | None] = mapped_column(String(16), nullable=True)
    registered_at: Mapped[float] = mapped_column(Float, default=time.time)
    registered_by: Mapped[str] = mapped_column(String(64), default="")


class Deployment(Base):
    """An SVM for one host: enrolment token (hashed, single use), then its certificate."""

    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    host_node_id: Mapped[int | None] = mapped_column(
        ForeignKey("inventory_nodes.id", ondelete="SET NULL"), nullable=True
    )
    host_name: Mapped[str] = mapped_column(String(256))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_expires_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending|enrolled|revoked
    enrolled_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cert_fingerprint: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    cert_serial: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    version: Mapped[str] = mapped_column(String(64), default="")
    db_versions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    load: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    health: Mapped[str] = mapped_column(String(32), default="unknown")
    health_detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class EventRow(Base):
    __tablename__ = "events"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    ts: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    event_type: Mapped[str] = mapped_column(String(32))
    host: Mapped[str | None] = mapped_column(String(256), nullable=True)
    vm: Mapped[str | None] = mapped_column(String(256), nullable=True)
    severity: Mapped[int] = mapped_column(Integer)
    detection: Mapped[str | None] = mapped_column(String(256), nullable=True)
    size: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[str] = mapped_column(Text)  # the EVE JSON object, as received

    __table_args__ = (
        # Few indexes on purpose: each one costs every insert. Queries page by seq (the primary
        # key) newest first and filter; time ranges and VMs, the common cases, have their own.
        Index("ix_events_ts", "ts"),
        Index("ix_events_vm_ts", "vm", "ts"),
    )


class Exporter(Base):
    """A SIEM destination; `cursor` is the last event seq shipped."""

    __tablename__ = "exporters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))  # syslog | jsonl
    transport: Mapped[str] = mapped_column(String(8), default="udp")  # udp | tcp | tls
    address: Mapped[str] = mapped_column(String(512))  # host:port, or a file path for jsonl
    fmt: Mapped[str] = mapped_column(String(8), default="cef")  # cef | json
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    cursor: Mapped[int] = mapped_column(BigId, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        eng = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(eng, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return eng
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)


def migrate(url: str) -> None:
    """Bring the database to the newest schema (Alembic `upgrade head`)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(cfg, "head")


def session_factory(eng: Engine) -> sessionmaker[Session]:
    return sessionmaker(eng, expire_on_commit=False)


ROOT_KEY = "root"


def root_node(s: Session) -> Node:
    """The tree's root (created on first use; connection_id NULL, key 'root')."""
    node = s.scalar(select(Node).where(Node.connection_id.is_(None), Node.key == ROOT_KEY))
    if node is None:
        node = Node(connection_id=None, kind="root", key=ROOT_KEY, name="Inventory")
        s.add(node)
        s.flush()
    return node
