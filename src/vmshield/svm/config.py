"""The SVM's local configuration (TOML), used when no center provides profiles.

[svm]
host = "esx1"                      # name of this hypervisor host in events
db = ["/var/lib/vmshield/db"]      # signature database files or directories
workers = 0                        # scan processes; 0 = one per core
queue = 1024                       # scans waiting for a worker, all VMs together
per_vm_concurrency = 4             # scans of one VM running at once
cache_entries = 200000             # shared verdict cache (SHA-256 + db version)
backup_dir = "/var/lib/vmshield/backup"
eve = "/var/log/vmshield/eve.json"

[profiles.default]
action = "quarantine"              # infected: disinfect | quarantine | delete | deny | report
unscannable = "allow"              # limits_exceeded / encrypted / error: allow (reported) | deny
failure_mode = "open"              # verdict late or SVM unreachable: open (allow) | closed (deny)
deadline = 3.0                     # seconds an open/exec waits for a verdict
on_access = ["open", "exec", "close_write"]

[vms.vm1]
profile = "strict"
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("vmshield.svm")

ACTIONS = ("disinfect", "quarantine", "delete", "deny", "report")
ACCESS_KINDS = ("open", "exec", "close_write")


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str = "default"
    action: str = "quarantine"
    unscannable: str = "allow"
    failure_mode: str = "open"
    deadline: float = 3.0
    on_access: tuple[str, ...] = ACCESS_KINDS
    fallback: str = "quarantine"  # when disinfection is impossible
    exclude_paths: tuple[str, ...] = ()  # globs or re:REGEX, sent to the agent
    exclude_processes: tuple[str, ...] = ()
    # "protected", or why the center does not protect this VM ("excluded", "unprotected"): its
    # accesses are then allowed unscanned (and never cached as clean).
    protection: str = "protected"

    @property
    def protected(self) -> bool:
        return self.protection == "protected"

    @classmethod
    def from_dict(cls, name: str, obj: dict[str, Any], where: str) -> Profile:
        known = {
            "action",
            "unscannable",
            "failure_mode",
            "deadline",
            "on_access",
            "fallback",
            "exclude_paths",
            "exclude_processes",
        }
        for key in obj:
            if key not in known:
                raise ConfigError(
                    f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})"
                )
        p = cls(
            name=name,
            action=str(obj.get("action", cls.action)),
            unscannable=str(obj.get("unscannable", cls.unscannable)),
            failure_mode=str(obj.get("failure_mode", cls.failure_mode)),
            deadline=float(obj.get("deadline", cls.deadline)),
            on_access=tuple(obj.get("on_access", ACCESS_KINDS)),
            fallback=str(obj.get("fallback", cls.fallback)),
            exclude_paths=tuple(str(x) for x in obj.get("exclude_paths", ())),
            exclude_processes=tuple(str(x) for x in obj.get("exclude_processes", ())),
        )
        if p.fallback not in ("quarantine", "delete", "deny", "report"):
            raise ConfigError(
                f"{where}.fallback: {p.fallback!r}; expected quarantine, delete, deny or report"
            )
        if p.action not in ACTIONS:
            raise ConfigError(f"{where}.action: {p.action!r} is not one of {', '.join(ACTIONS)}")
        if p.unscannable not in ("allow", "deny"):
            raise ConfigError(f"{where}.unscannable: {p.unscannable!r}; expected allow or deny")
        if p.failure_mode not in ("open", "closed"):
            raise ConfigError(f"{where}.failure_mode: {p.failure_mode!r}; expected open or closed")
        if not 0.05 <= p.deadline <= 600:
            raise ConfigError(f"{where}.deadline: {p.deadline} outside 0.05..600 seconds")
        for kind in p.on_access:
            if kind not in ACCESS_KINDS:
                raise ConfigError(
                    f"{where}.on_access: {kind!r} is not one of {', '.join(ACCESS_KINDS)}"
                )
        return p


@dataclass(frozen=True)
class InventoryVm:
    name: str
    uuids: frozenset[str]  # BIOS and instance UUIDs, lowercase, also in SMBIOS byte order


def swapped_uuid(u: str) -> str:
    """The same UUID with its first three fields byte-swapped: SMBIOS before 2.6 (and some
    hypervisors) present the BIOS UUID that way in /sys/class/dmi/id/product_uuid."""
    h = u.replace("-", "").lower()
    if len(h) != 32:
        return u.lower()
    b = bytes.fromhex(h)
    s = (b[3::-1] + b[5:3:-1] + b[7:5:-1] + b[8:]).hex()
    return f"{s[:8]}-{s[8:12]}-{s[12:16]}-{s[16:20]}-{s[20:]}"


def inventory_from_center(cfg: dict[str, Any]) -> dict[str, InventoryVm]:
    out: dict[str, InventoryVm] = {}
    for vm in cfg.get("vms") or []:
        name = str(vm.get("name") or "")
        if not name:
            continue
        uuids = set()
        for key in ("uuid", "instance_uuid"):
            u = str(vm.get(key) or "").lower()
            if u:
                uuids |= {u, swapped_uuid(u)}
        entry = InventoryVm(name, frozenset(uuids))
        for k in (name, str(vm.get("key") or ""), *uuids):
            if k:
                out[k.lower() if k in uuids else k] = entry
    return out


@dataclass
class SvmConfig:
    host: str = field(default_factory=lambda: os.uname().nodename)
    db: list[str] = field(default_factory=list)
    workers: int = 0
    queue: int = 1024
    per_vm_concurrency: int = 4
    cache_entries: int = 200_000
    backup_dir: str = "/var/lib/vmshield/backup"
    eve: str = "/var/log/vmshield/eve.json"
    profiles: dict[str, Profile] = field(default_factory=lambda: {"default": Profile()})
    vm_profiles: dict[str, str] = field(default_factory=dict)
    center_profiles: dict[str, Profile] = field(default_factory=dict)  # from the center, by VM
    center_version: int = 0
    # This host's VMs in the center's inventory: name, key and UUIDs (lowercase) -> inventory name
    center_inventory: dict[str, InventoryVm] = field(default_factory=dict)

    def profile_for(self, vm: str, identity: str = "") -> Profile:
        # The center knows a VM by inventory name, key or BIOS UUID; the agent reports the latter.
        from_center = self.center_profiles.get(vm) or (
            self.center_profiles.get(identity) if identity else None
        )
        if from_center is not None:
            return from_center
        name = self.vm_profiles.get(vm, "default")
        return self.profiles.get(name) or self.profiles.get("default") or Profile()

    def worker_count(self) -> int:
        return self.workers if self.workers > 0 else (os.cpu_count() or 1)

    @classmethod
    def from_dict(cls, obj: dict[str, Any], where: str = "config") -> SvmConfig:
        svm = obj.get("svm", {})
        if not isinstance(svm, dict):
            raise ConfigError(f"{where}: [svm] must be a table")
        cfg = cls()
        for key, value in svm.items():
            if key not in {
                "host",
                "db",
                "workers",
                "queue",
                "per_vm_concurrency",
                "cache_entries",
                "backup_dir",
                "eve",
            }:
                raise ConfigError(f"{where}: unknown key svm.{key}")
            setattr(cfg, key, value)
        if isinstance(cfg.db, str):
            cfg.db = [cfg.db]
        for key in ("workers", "queue", "per_vm_concurrency", "cache_entries"):
            v = getattr(cfg, key)
            if not isinstance(v, int) or v < (0 if key == "workers" else 1):
                raise ConfigError(f"{where}: svm.{key} must be a positive integer, got {v!r}")
        profiles = {"default": Profile()}
        for name, body in (obj.get("profiles") or {}).items():
            if not isinstance(body, dict):
                raise ConfigError(f"{where}: profiles.{name} must be a table")
            profiles[name] = Profile.from_dict(name, body, f"{where}: profiles.{name}")
        cfg.profiles = profiles
        for vm, body in (obj.get("vms") or {}).items():
            pname = str((body or {}).get("profile", "default"))
            if pname not in profiles:
                raise ConfigError(f"{where}: vms.{vm}.profile {pname!r} is not a defined profile")
            cfg.vm_profiles[vm] = pname
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> SvmConfig:
        try:
            with open(path, "rb") as f:
                obj = tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: {exc.strerror}") from None
        return cls.from_dict(obj, str(path))


_CENTER_ACTIONS = {
    "disinfect": "disinfect",
    "delete": "delete",
    "quarantine": "quarantine",
    "block": "deny",
    "report": "report",
}


# The center's file protection statuses (center.store.Store.effective).
CENTER_NOT_PROTECTED = ("excluded", "unprotected")


def profiles_from_center(cfg: dict[str, Any], base: Profile) -> dict[str, Profile]:
    """The center's effective file profile of each VM of this host, as the scan service's Profile.

    A VM is known by its inventory name, key and BIOS/instance UUIDs (an agent's certificate or
    token names one of them). Settings the center does not have (failure mode, deadline) keep the
    local profile's values. A VM the center excludes, or protects with no profile, gets a
    not-protected profile: the center said so, the local default must not apply to it.
    """
    out: dict[str, Profile] = {}
    for vm in cfg.get("vms") or []:
        status = (vm.get("file") or {}).get("status")
        f = (vm.get("file") or {}).get("settings") or {}
        if status in CENTER_NOT_PROTECTED:
            prof = Profile(
                name=f"center:{vm.get('name')}",
                failure_mode=base.failure_mode,
                deadline=base.deadline,
                on_access=base.on_access,
                protection=str(status),
            )
            for key in ("name", "key", "uuid", "instance_uuid"):
                if vm.get(key):
                    out[str(vm[key])] = prof
            continue
        if status not in (None, "protected"):
            # A status this SVM does not know (a newer center): scan with the local profile.
            log.warning(
                "center configuration: VM %r has file status %r (expected protected, %s); "
                "its files are scanned with the local profile",
                vm.get("name"),
                status,
                " or ".join(CENTER_NOT_PROTECTED),
            )
            continue
        kinds = tuple(
            k
            for k, on in (
                ("open", f.get("on_open", True)),
                ("exec", f.get("on_execute", True)),
                ("close_write", f.get("on_close_write", True)),
            )
            if on
        )
        ex = f.get("exclusions") or {}
        paths = [str(x) for x in ex.get("paths", [])] + [f"re:{x}" for x in ex.get("regexes", [])]
        paths += [f"*.{str(e).lstrip('.')}" for e in ex.get("extensions", [])]
        fallback = _CENTER_ACTIONS.get(str(f.get("fallback", "quarantine")), "quarantine")
        prof = Profile(
            name=f"center:{vm.get('name')}",
            action=_CENTER_ACTIONS.get(str(f.get("action", "quarantine")), "quarantine"),
            unscannable=base.unscannable,
            failure_mode=base.failure_mode,
            deadline=base.deadline,
            on_access=kinds,
            fallback=fallback if fallback != "disinfect" else "quarantine",
            exclude_paths=tuple(paths),
            exclude_processes=tuple(str(x) for x in ex.get("processes", [])),
        )
        for key in ("name", "key", "uuid", "instance_uuid"):
            if vm.get(key):
                out[str(vm[key])] = prof
    return out
