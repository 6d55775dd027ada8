"""`vmshield rules`: check Suricata rule files before deploying them (like `suricata -T`), and
generate a realistic rule set for benchmarks.

    vmshield rules check [--config suricata.yaml] [--classification F] [--threshold F]
                         [--home-net CIDRS] [--var NAME=VALUE]... [--quiet] [FILE...]
    vmshield rules gen [--count N] [--seed S] [-o FILE]

`check` prints every rejected rule (file:line: sid keyword: reason) and a summary; exit 0 when
every rule loads, 1 when some are rejected, 2 when an input cannot be read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser("rules", help="check Suricata rule files; generate benchmark rules")
    rs = p.add_subparsers(dest="rules_cmd", metavar="ACTION")
    c = rs.add_parser("check", help="load rule files and report every rejected rule")
    c.add_argument("files", nargs="*", metavar="FILE", help="rule files")
    c.add_argument("--config", metavar="YAML", help="suricata.yaml (rule-files, vars, ...)")
    c.add_argument("--classification", metavar="FILE", help="classification.config")
    c.add_argument("--threshold", metavar="FILE", help="threshold.config")
    c.add_argument("--home-net", metavar="CIDRS", help="HOME_NET, comma separated")
    c.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                   help="address or port variable (port if NAME ends in _PORTS)")  # fmt: skip
    c.add_argument("--quiet", action="store_true", help="only the summary")
    c.add_argument("--exclude-classtype", action="append", default=[], metavar="CLASSTYPE",
                   help="load as a policy leaving this classtype out would (repeatable)")  # fmt: skip
    c.add_argument("--report-only", action="store_true",
                   help="load drop/reject rules as alert rules, as an IDS action 'report' does")  # fmt: skip
    c.set_defaults(func=_check)
    g = rs.add_parser("gen", help="write a generated rule set of realistic shape")
    g.add_argument("--count", type=int, default=1000)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("-o", "--output", metavar="FILE", help="default: standard output")
    g.set_defaults(func=_gen)
    p.set_defaults(func=lambda _a: (p.print_help(), 2)[1])


def _err(msg: str) -> None:
    print(f"vmshield rules: {msg}", file=sys.stderr)


def _check(args: argparse.Namespace) -> int:
    from vmshield.engines.net.rules import Classification, RuleSet, Variables
    from vmshield.engines.net.rules.variables import GroupError

    if not args.files and not args.config:
        _err("give rule files or --config")
        return 2
    for f in [*args.files, args.config, args.classification, args.threshold]:
        if f is not None and not Path(f).is_file():
            _err(f"{f}: cannot read (no such file)")
            return 2
    try:
        if args.config:
            from vmshield.engines.net.rules.config import load_suricata_config

            cfg = load_suricata_config(args.config)
            variables = cfg.variables
            paths = [*cfg.rule_paths, *map(Path, args.files)]
            cls_file = args.classification or cfg.classification
            thr_file = args.threshold or cfg.threshold_file
            missing, datasets = cfg.missing, cfg.datasets
        else:
            variables = Variables.default()
            paths = [Path(f) for f in args.files]
            cls_file, thr_file, missing, datasets = args.classification, args.threshold, [], {}
        if args.home_net:
            variables.set_address("HOME_NET", "[" + args.home_net + "]")
        for item in args.var:
            name, sep, value = item.partition("=")
            if not sep:
                _err(f"--var {item}: expected NAME=VALUE")
                return 2
            if name.endswith("_PORTS"):
                variables.set_port(name, value)
            else:
                variables.set_address(name, value)
    except (GroupError, OSError) as e:
        _err(str(e))
        return 2
    classification = Classification.load(cls_file) if cls_file else Classification.default()
    for msg in classification.errors:
        print(f"classification: {msg}")
    from vmshield.engines.net.rules.select import RuleSelection

    selection = RuleSelection(frozenset(args.exclude_classtype), args.report_only)
    unknown = sorted(c for c in selection.exclude_classtypes if classification.get(c) is None)
    if unknown:
        _err(f"--exclude-classtype: unknown classtypes {unknown} (not in the classification)")
        return 2
    rs = RuleSet.load(paths=paths, variables=variables, classification=classification,
                      threshold_config=thr_file, datasets_config=datasets,
                      selection=None if selection.everything else selection)  # fmt: skip
    for m in missing:
        print(f"{args.config}: rule file not found: {m}")
    if not args.quiet:
        for rej in rs.rejected:
            print(rej)
        for w in rs.warnings:
            print(f"warning: {w}")
    s = rs.stats
    policy = ""
    if not selection.everything:
        policy = f", {s.left_out} left out by policy, {s.report_only} made report-only"
    print(f"{s.loaded} rules loaded, {s.rejected} rejected, {s.files} files{policy}")
    return 1 if rs.rejected or missing or classification.errors else 0


def _gen(args: argparse.Namespace) -> int:
    from vmshield.engines.net.rules.gen import generate

    if args.count < 0:
        _err("--count must be positive")
        return 2
    text = "\n".join(generate(args.count, seed=args.seed)) + "\n"
    if args.output:
        try:
            Path(args.output).write_text(text)
        except OSError as e:
            _err(f"{args.output}: cannot write ({e.strerror})")
            return 2
    else:
        sys.stdout.write(text)
    return 0
