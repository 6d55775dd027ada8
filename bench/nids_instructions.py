"""Instructions per packet of the `vmshield nids` loop, counted by valgrind's callgrind.

    .venv/bin/python bench/nids_instructions.py [--packets 100000] [--rules 0 1000] [--flow-events]

Wall-clock packets/s moves with the machine (by a third between runs on a shared VM, by 2x
between machine kinds); the instruction count of the same code on the same input does not. This
runs the first N packets of bench/nids.py's capture through the same engine, rules and attack
detector as bench/nids.py, under `valgrind --tool=callgrind`, collecting only inside
`Engine.process_capture` (pcap reading, decode, flows, streams, app layer, rules, attacks,
events), and prints instructions per packet for each rule count. With --flow-events the engine
also makes flow events (`vmshield nids --flow-events`), and the flows still open at the end are
flushed inside the count (making the events, not encoding them). Needs the compiled
engine (`make bootstrap`) and valgrind.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

TOGGLE = "CPyDef_engine___Engine___process_capture"
TOGGLE_FLUSH = "CPyDef_engine___Engine___flush"


def _child(n_packets: int, n_rules: int, flow_events: bool) -> None:
    """Runs under valgrind: load everything, then one `run_capture` over the first packets."""
    import itertools

    sys.path.insert(0, str(Path(__file__).parent))
    import nids as bench  # bench/nids.py

    from vmshield import native
    from vmshield.cli.nids import run_capture
    from vmshield.engines.net.attacks import AttackDetector
    from vmshield.engines.net.config import EngineConfig
    from vmshield.engines.net.engine import Action, Engine
    from vmshield.engines.net.pcap import read_packets

    if not native.ACTIVE:
        sys.exit(f"the compiled engine is not active ({native.REASON}): run `make bootstrap`")
    rules = None
    if n_rules:
        from vmshield.engines.net.rules import Classification, RuleSet, Variables
        from vmshield.engines.net.rules.gen import generate as gen_rules

        rules = RuleSet.load(
            texts=["\n".join(gen_rules(n_rules))],
            variables=Variables.default(),
            classification=Classification.default(),
        )
    cfg = EngineConfig(mode="ips")
    cfg.out_flow = flow_events
    engine = Engine(cfg, rules=rules, attacks=AttackDetector())
    path = bench.capture(1_000_000)
    actions = [0] * len(Action)
    native.tune_gc()
    with open(path, "rb") as f:  # read inside the count, as `vmshield nids` reads
        records = itertools.islice(read_packets(f, name=str(path)), n_packets)
        run_capture(engine, records, lambda _ev: None, actions)
        if flow_events:
            engine.flush()
    print(f"packets {engine.n_packets}")


def count(n_packets: int, n_rules: int, flow_events: bool = False) -> tuple[int, int]:
    """(instructions inside process_capture, packets) for one rule count."""
    with tempfile.TemporaryDirectory(prefix="vmshield-cg-") as tmp:
        out = Path(tmp) / "callgrind.out"
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--toggle-collect={TOGGLE}",
                f"--toggle-collect={TOGGLE_FLUSH}",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                str(n_packets),
                str(n_rules),
                str(int(flow_events)),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        if proc.returncode != 0:
            sys.exit(f"valgrind run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        m = re.search(r"^packets (\d+)$", proc.stdout, re.M)
        totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        if not m or not totals:
            sys.exit(f"could not read the counts from {out}")
        return int(totals.group(1)), int(m.group(1))


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--rules", type=int, nargs="+", default=[0, 1000])
    ap.add_argument("--flow-events", action="store_true", help="flow events and EVE lines too")
    args = ap.parse_args()
    for n_rules in args.rules:
        instr, packets = count(args.packets, n_rules, args.flow_events)
        print(
            f"{n_rules:>5} rules: {instr / packets:>9,.0f} instructions/packet "
            f"({instr:,} over {packets:,} packets)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
