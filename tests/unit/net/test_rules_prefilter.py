"""The Hyperscan prefilter never loses a match: prefilter + verify == verify every rule."""

from __future__ import annotations

import re

from _rules_util import ctx, pkt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmshield.engines.net.rules import FlowDetectState, RuleSet
from vmshield.engines.net.rules.detect import Env, flow_conditions, header_match, payload_match

ALPHA = "abcAB"
lit = st.text(alphabet=ALPHA, min_size=1, max_size=4)


@st.composite
def content_opts(draw: st.DrawFn, first: bool) -> str:
    pat = draw(lit)
    neg = draw(st.booleans()) and draw(st.booleans())
    out = f'content:{"!" if neg else ""}"{pat}";'
    if draw(st.booleans()):
        out += " nocase;"
    mode = draw(st.sampled_from(["none", "abs", "rel", "starts", "ends"]))
    if mode == "abs":
        off = draw(st.integers(0, 6))
        out += f" offset:{off}; depth:{len(pat) + draw(st.integers(0, 6))};"
    elif mode == "rel" and not first:
        out += f" distance:{draw(st.integers(-3, 4))}; within:{len(pat) + draw(st.integers(0, 6))};"
    elif mode == "starts":
        out += " startswith;"
    elif mode == "ends":
        out += " endswith;"
    if not neg and len(pat) > 1 and draw(st.booleans()) and draw(st.booleans()):
        out += f" fast_pattern:{draw(st.integers(0, len(pat) - 2))},1;"
    return out


@st.composite
def rule(draw: st.DrawFn, sid: int) -> str:
    buf = draw(st.sampled_from(["", "http.uri; ", "http.host; "]))
    n = draw(st.integers(1, 3))
    parts = [draw(content_opts(i == 0)) for i in range(n)]
    if draw(st.integers(0, 5)) == 0:
        parts.append(f'pcre:"/{draw(lit)}/i";')
    body = " ".join(parts)
    first = body.find(" fast_pattern:")
    if first >= 0:  # one fast_pattern per rule
        head, tail = body[: first + 1], body[first + 1 :]
        body = head + tail[:14] + re.sub(r" fast_pattern:\d+,1;", "", tail[14:])
    if buf == "http.host; ":
        body = body.replace('"', "'")  # host is lower case: keep patterns lower and nocase
        body = "".join(ch.lower() for ch in body).replace("'", '"')
    proto = "http" if buf else draw(st.sampled_from(["tcp", "ip"]))
    return f"alert {proto} any any -> any any ({buf}{body} sid:{sid};)"


def brute_force(rs: RuleSet, c: object) -> list[int]:
    env = Env(c, rs.datasets)  # type: ignore[arg-type]
    return sorted(
        r.sid
        for r in rs.rules
        if header_match(r, env)
        and (not r.lists or payload_match(r, env))
        and flow_conditions(r, env)
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules_=st.lists(st.integers(), min_size=1, max_size=12).flatmap(
        lambda xs: st.tuples(*[rule(i + 1) for i in range(len(xs))])
    ),
    payloads=st.lists(
        st.binary(max_size=24).map(lambda b: bytes(ALPHA.encode()[x % 5] for x in b)),
        min_size=1,
        max_size=4,
    ),
    uri=st.text(alphabet=ALPHA, max_size=16),
    host=st.text(alphabet="abc", max_size=10),
)
def test_prefilter_equals_brute_force(
    rules_: tuple[str, ...], payloads: list[bytes], uri: str, host: str
) -> None:
    rs = RuleSet.from_text("\n".join(rules_))
    loaded = {r.sid for r in rs.rules}
    assert loaded, [str(e) for e in rs.rejected]
    for pl in payloads:
        for stream in (None, pl + b"ab"):
            c = ctx(pkt(pl), stream=stream, app_proto="http",
                    buffers={"http.uri": uri.encode(), "http.host": host.encode()},
                    flow_state=FlowDetectState())  # fmt: skip
            got = sorted(a.sid for a in rs.match(c))
            assert got == brute_force(rs, c), (rules_, pl, uri, host)


def test_rules_without_content_are_always_checked() -> None:
    rs = RuleSet.from_text(
        "alert tcp any any -> any any (flags:S; sid:1;)\n"
        'alert tcp any any -> any any (content:!"x"; sid:2;)\n'
        'alert tcp any any -> any any (content:"abc"; sid:3;)\n'
    )
    assert sorted(a.sid for a in rs.match(ctx(pkt(b"zzz", tcp_flags=2)))) == [1, 2]
    assert sorted(a.sid for a in rs.match(ctx(pkt(b"abc", tcp_flags=2)))) == [1, 2, 3]


def test_many_rules_share_one_prefilter_and_cost_follows_matches() -> None:
    text = "\n".join(
        f'alert tcp any any -> any any (content:"needle{i:04d}"; sid:{i + 1};)' for i in range(2000)
    )
    rs = RuleSet.from_text(text)
    assert rs.stats.loaded == 2000
    assert sorted(a.sid for a in rs.match(ctx(pkt(b"..needle0042..needle1999")))) == [43, 2000]
    assert rs.match(ctx(pkt(b"nothing here"))) == []
