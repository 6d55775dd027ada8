"""The rule-related part of a suricata.yaml: rule files, classification file, variables.

So that an existing Suricata deployment's configuration loads unchanged:
`default-rule-path`, `rule-files` (a list; `*` globs are expanded), `classification-file`,
`threshold-file` and
`vars` (see Variables.from_suricata_yaml). Only these keys are read, with a small line parser
(no YAML library): everything else in the file is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .variables import Variables


@dataclass(slots=True)
class SuricataConfig:
    rule_paths: list[Path] = field(default_factory=list)
    classification: Path | None = None
    threshold_file: Path | None = None
    # datasets: name -> (type, file, is_state), from the `datasets:` section
    datasets: dict[str, tuple[str | None, str | None, bool]] = field(default_factory=dict)
    variables: Variables = field(default_factory=Variables.default)
    missing: list[str] = field(default_factory=list)  # rule files named but not found


def _scalar(v: str) -> str:
    v = v.split(" #", 1)[0].strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        v = v[1:-1]
    return v


def load_suricata_config(path: str | Path) -> SuricataConfig:
    path = Path(path)
    text = path.read_text("utf-8", errors="surrogateescape")
    rule_path = path.parent
    files: list[str] = []
    cls: str | None = None
    thr: str | None = None
    in_files = False
    in_ds = False
    ds_name: str | None = None
    ds: dict[str, dict[str, str]] = {}
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip())
        line = raw.strip()
        if indent == 0:
            in_files = False
            in_ds = line.partition(":")[0] == "datasets"
            ds_name = None
            key, _, val = line.partition(":")
            if key == "default-rule-path" and val.strip():
                rule_path = Path(_scalar(val))
                if not rule_path.is_absolute():
                    rule_path = path.parent / rule_path
            elif key == "rule-files":
                in_files = True
            elif key == "classification-file" and val.strip():
                cls = _scalar(val)
            elif key == "threshold-file" and val.strip():
                thr = _scalar(val)
            continue
        if in_files and line.startswith("- "):
            files.append(_scalar(line[2:]))
        elif in_ds:
            key, _, val = line.partition(":")
            if not val.strip():
                ds_name = None if key.strip() == "defaults" else key.strip()
                if ds_name:
                    ds.setdefault(ds_name, {})
            elif ds_name is not None:
                ds[ds_name][key.strip()] = _scalar(val)
    cfg = SuricataConfig(variables=Variables.from_suricata_yaml(path))
    for f in files:
        p = Path(f) if Path(f).is_absolute() else rule_path / f
        if "*" in p.name:
            hits = sorted(p.parent.glob(p.name))
            if not hits:
                cfg.missing.append(str(p))
            cfg.rule_paths.extend(hits)
        elif p.is_file():
            cfg.rule_paths.append(p)
        else:
            cfg.missing.append(str(p))
    for name, opts in ds.items():
        dfile: str | None = opts.get("load") or opts.get("state")
        if dfile and not Path(dfile).is_absolute():
            dfile = str(path.parent / dfile)
        cfg.datasets[name] = (opts.get("type"), dfile, "state" in opts)
    if cls:
        cfg.classification = Path(cls) if Path(cls).is_absolute() else path.parent / cls
    if thr:
        cfg.threshold_file = Path(thr) if Path(thr).is_absolute() else path.parent / thr
    return cfg
