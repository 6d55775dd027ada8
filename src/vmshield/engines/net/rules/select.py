"""Which loaded rules apply, and how: a policy's choice applied when rule files are loaded.

`RuleSelection` is given to `RuleSet.load(selection=...)` and applied to each parsed `Rule`, so
it sees what the parser sees (a classtype in a continued line, every `reject*` form), and the
rule files are never copied or rewritten:
- rules whose classtype is in `exclude_classtypes` are not loaded: counted in
  `LoadStats.left_out`, never as rejected. Rules that cannot alert (`pass` rules, `noalert`
  rules that only set flowbits for others) stay whatever their classtype: leaving them out
  would make other rules fire or go quiet;
- `report_only`: blocking rules (drop, reject, rejectsrc, rejectdst, rejectboth) load as alert
  rules (Suricata's alert: the event says action "allowed"), counted in `LoadStats.report_only`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .parser import Rule

_BLOCKING = ("drop", "reject")  # parser.ACTIONS maps every reject form onto "reject"
LEFT_OUT, AS_WRITTEN, MADE_ALERT = 0, 1, 2


@dataclass(frozen=True, slots=True)
class RuleSelection:
    exclude_classtypes: frozenset[str] = frozenset()  # lower case, as the parser stores them
    report_only: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "exclude_classtypes", frozenset(c.lower() for c in self.exclude_classtypes)
        )

    @property
    def everything(self) -> bool:
        """Rules load as written."""
        return not self.exclude_classtypes and not self.report_only

    def apply(self, r: Rule) -> int:
        """LEFT_OUT (do not load `r`), AS_WRITTEN, or MADE_ALERT (its action is now alert)."""
        if r.classtype in self.exclude_classtypes and r.action != "pass" and not r.noalert:
            return LEFT_OUT
        if self.report_only and r.action in _BLOCKING:
            r.action = "alert"
            return MADE_ALERT
        return AS_WRITTEN
