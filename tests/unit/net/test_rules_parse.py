"""Rule parsing: examples from Suricata's documentation, rejected rules, variables, classes."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from vmshield.engines.net.rules import Classification, RuleSet, Variables
from vmshield.engines.net.rules.variables import GroupError

# Rules in the shape of the examples on Suricata's rule documentation pages (rules/*.rst).
DOC_EXAMPLES = [
    # intro.rst
    'drop tcp $HOME_NET any -> $EXTERNAL_NET any (msg:"ET TROJAN Likely Bot Nick in IRC (USA +..)"; flow:established,to_server; flowbits:isset,is_proto_irc; content:"NICK "; pcre:"/NICK .*USA.*[0-9]{3,}/i"; reference:url,doc.emergingthreats.net/2008124; classtype:trojan-activity; sid:2008124; rev:2;)',
    'alert tcp [192.168.0.0/16,!192.168.0.0/24] any -> any any (msg:"neg"; sid:100;)',
    'alert tcp any [1:80,![2,4]] -> any ![80,443] (msg:"ports"; sid:101;)',
    'alert tcp any any <> any 1024: (msg:"bidir"; sid:102;)',
    'alert tcp [10.0.0.0/8, 192.168.0.0/16] any -> any [80, 443] (msg:"spaces in lists"; SID:104;)',
    'alert tcp ! 1.1.1.1 [1024: ] -> ![1.1.1.1, 1.1.1.2] [80:100,!99] (msg:"intro.rst forms"; sid:105;)',
    'alert http $HOME_NET any -> $EXTERNAL_NET $HTTP_PORTS (msg:"http"; sid:103;)',
    # meta-keywords.rst
    'alert tcp any any -> any any (msg:"ET INFO test"; gid:1; sid:123; rev:1; classtype:bad-unknown; priority:1; reference:cve,CVE-2014-1234; metadata:created_at 2010_09_23, updated_at 2010_09_23; target:dest_ip;)',
    # payload-keywords.rst
    'alert tcp any any -> any any (content:"a|0D|bc"; content:"|61 0D 62 63|"; content:"a|0D|b|63|"; sid:200;)',
    'alert tcp any any -> any 21 (msg:"FTP root"; content:"user root"; nocase; sid:201;)',
    'alert tcp any any -> any any (content:"def"; offset:3; depth:3; sid:202;)',
    'alert tcp any any -> any any (content:"abc"; content:"def"; distance:0; within:10; sid:203;)',
    'alert tcp any any -> any any (content:"abc"; startswith; content:"xyz"; endswith; sid:204;)',
    'alert http any any -> any any (http.uri; content:"/index.html"; bsize:11; sid:205;)',
    "alert http any any -> any any (urilen:5<>10; sid:206;)",
    'alert tcp any any -> any any (content:"one"; isdataat:!10,relative; sid:207;)',
    'alert tcp any any -> any any (content:"a"; fast_pattern; content:"bc"; sid:208;)',
    'alert tcp any any -> any any (content:"aaaaaaaaaaaaaaaaaaaaa"; fast_pattern:8,4; sid:209;)',
    "alert tcp any any -> any any (byte_test:2,=,0x01,0,relative; byte_test:4,>,2,0,string,dec; sid:210;)",
    "alert tcp any any -> any any (byte_jump:4,0,relative,little,multiplier 2,post_offset -4; sid:211;)",
    'alert tcp any any -> any any (byte_extract:1,0,len,relative; content:"x"; within:len; sid:212;)',
    "alert tcp any any -> any any (byte_math:bytes 1, offset 0, oper +, rvalue 2, result sum; byte_test:1,=,sum,1; sid:213;)",
    'alert tcp any any -> any any (pcre:"/^GET \\/(?<name>[a-z]+)/smi"; pcre:!"/evil/R"; sid:214;)',
    'alert tcp any any -> any any (content:"GET"; http_method; content:"/x"; http_uri; content:"c=1"; http_cookie; sid:215;)',
    'alert tcp any any -> any any (pcre:"/\\/admin/U"; sid:216;)',
    'alert dns any any -> any any (dns.query; content:"google"; nocase; sid:217;)',
    'alert tls any any -> any any (tls.sni; content:"example.com"; endswith; sid:218;)',
    'alert tls any any -> any any (ja3.hash; content:"e7eca2baf4458d095b7f45da28c16c34"; sid:219;)',
    "alert tls any any -> any any (tls.version:1.2; sid:220;)",
    # header-keywords.rst
    "alert ip any any -> any any (ttl:<10; id:1; sameip; ip_proto:!TCP; sid:300;)",
    "alert tcp any any -> any any (flags:SF,12; sid:301;)",
    "alert tcp any any -> any any (flags:!A; dsize:>100; sid:302;)",
    "alert icmp any any -> any any (itype:>10; icode:0; icmp_id:0; icmp_seq:1; sid:303;)",
    "alert tcp any any -> any any (flow:established,to_client; stream_size:server,>,100; sid:304;)",
    "alert tcp any any -> any any (dsize:300<>400; sid:305;)",
    # flow-keywords.rst
    'alert tcp any any -> any any (msg:"User login"; content:"login"; flowbits:set,userlogin; flowbits:noalert; sid:400;)',
    'alert tcp any any -> any any (msg:"Retrieving db"; content:"db"; flowbits:isset,userlogin; sid:401;)',
    "alert tcp any any -> any any (flowbits:isset,a|b; flowbits:set,c&d; sid:402;)",
    'alert tcp any any -> any any (msg:"Counting Usernames"; content:"jonkman"; flowint:usernamecount,+,1; flowint:usernamecount,>,2; sid:403;)',
    "alert tcp any any -> any any (flowint:count,notset; flowint:count,=,1; sid:404;)",
    'alert tcp any any -> any any (flow:only_stream; content:"x"; sid:405;)',
    "alert tcp any any -> any any (app-layer-protocol:!http; sid:406;)",
    # thresholding.rst
    'alert tcp !$HOME_NET any -> $HOME_NET 22 (msg:"ET SCAN"; flow:to_server; flags:S,12; threshold: type threshold, track by_src, count 5, seconds 60; sid:2001219; rev:18;)',
    'alert http $HOME_NET any -> any $HTTP_PORTS (msg:"ET USER_AGENTS Internet Explorer 6"; flow:to_server; http.user_agent; content:"Mozilla/4.0 (compatible|3b| MSIE 6.0|3b|"; threshold: type limit, track by_src, seconds 180, count 1; sid:2010706; rev:7;)',
    'alert tcp $HOME_NET 25 -> $EXTERNAL_NET any (msg:"ET POLICY SMTP"; flow:established; content:"mailfrom"; threshold: type both, count 5, seconds 60, track by_src; sid:2002087; rev:10;)',
    'alert http $EXTERNAL_NET any -> $HOME_NET any (msg:"LOGIN ATTEMPT"; flow:established,to_server; http.method; content:"POST"; http.uri; content:"/login"; detection_filter:track by_src, count 30, seconds 60; sid:1000001; rev:1;)',
    # transforms.rst
    'alert dns any any -> any any (dns.query; dotprefix; content:".microsoft.com"; endswith; sid:500;)',
    'alert http any any -> any any (http.request_body; strip_whitespace; content:"a=b"; sid:501;)',
    'alert http any any -> any any (http.uri; url_decode; content:"/x y"; sid:502;)',
    'alert http any any -> any any (http.uri; content:"/"; http.header; to_lowercase; content:"user-agent"; sid:503;)',
    'alert http any any -> any any (http.request_body; from_base64: offset 0, mode rfc4648; content:"hello"; sid:504;)',
    'alert http any any -> any any (http.request_body; compress_whitespace; to_sha256; content:"|54A9 7A8A B09C 1B81 9257 1ABC 4E43 43C8 3A2B 3FCE 2B08 2CD0 39D3 D2BC 5BB2 0A8F|"; sid:505;)',
    'alert tcp any any -> any any (ipv4.hdr; content:"|06|"; offset:9; depth:1; sid:506;)',
    'alert tcp any any -> any any (tcp.hdr; content:"|02 04|"; offset:20; sid:507;)',
    'alert http any any -> any any (file.data; content:"PK"; startswith; sid:508;)',
    'alert http any any -> any any (http.stat_code; content:"200"; http.stat_msg; content:"OK"; http.server; content:"nginx"; http.protocol; content:"HTTP/1.1"; sid:509;)',
    'alert http any any -> any any (http.host; content:"example.com"; http.request_header; content:"x"; http.content_type; content:"text"; sid:510;)',
    'alert http any any -> any any (http.response_header; content:"y"; http.content_type; content:"text"; sid:513;)',
    'reject tcp any any -> any any (content:"bad"; rawbytes; prefilter; sid:511;)',
    "pass tcp 10.0.0.0/8 any -> any any (sid:512;)",
]


def test_documentation_examples_all_load() -> None:
    rs = RuleSet.from_text("\n".join(DOC_EXAMPLES))
    assert [str(e) for e in rs.rejected] == []
    assert rs.stats.loaded == len(DOC_EXAMPLES)


def test_meta_fields() -> None:
    rs = RuleSet.from_text(next(r for r in DOC_EXAMPLES if "sid:123;" in r))
    r = rs.rules[0]
    assert (r.sid, r.gid, r.rev, r.msg) == (123, 1, 1, "ET INFO test")
    assert r.classtype == "bad-unknown" and r.category == "Potentially Bad Traffic"
    assert r.priority == 1  # explicit priority wins over the classtype's 2
    assert r.metadata == {"created_at": ["2010_09_23"], "updated_at": ["2010_09_23"]}
    assert r.references == ["cve,CVE-2014-1234"] and r.target == "dest_ip"


def test_classtype_sets_priority() -> None:
    rs = RuleSet.from_text(
        'alert tcp any any -> any any (msg:"x"; classtype:trojan-activity; sid:1;)'
    )
    assert rs.rules[0].priority == 1
    assert rs.rules[0].category == "A Network Trojan was detected"


def test_content_hex_and_escapes() -> None:
    rs = RuleSet.from_text(
        'alert tcp any any -> any any (content:"a|0D|bc"; content:"q\\"\\;\\\\"; sid:1;)'
    )
    pats = [c.pattern for c in rs.rules[0].lists[("pkt", ())]]
    assert pats == [b"a\rbc", b'q";\\']


def test_unsupported_keyword_is_rejected_with_file_line_sid_keyword(tmp_path: Path) -> None:
    f = tmp_path / "local.rules"
    f.write_text(
        "# comment line\n"
        "\n"
        'alert tcp any any -> any any (msg:"good"; content:"a"; sid:1;)\n'
        'alert tcp any any -> any any (msg:"bad"; content:"a"; \\\n'
        "    frobnicate:3; sid:2;)\n"
        'alert tcp any any -> any any (msg:"good2"; sid:3;)\n'
    )
    rs = RuleSet.load(paths=[f])
    assert rs.stats.loaded == 2 and rs.stats.rejected == 1
    (e,) = rs.rejected
    assert (e.file, e.line, e.sid, e.keyword) == (str(f), 4, 2, "frobnicate")
    assert "unsupported keyword" in str(e) and str(f) in str(e)
    assert sorted(r.sid for r in rs.rules) == [1, 3]


@pytest.mark.parametrize(
    ("opts", "keyword", "reason"),
    [
        ('content:"abc"; depth:2;', "depth", "smaller than the content length"),
        ('content:"abc"; offset:1; distance:2;', "distance", "cannot be combined"),
        ('content:"a"; within:0;', "within", "smaller"),
        ('content:"|4G|";', "content", "invalid hex"),
        ('content:"|41";', "content", "unterminated"),
        ('content:"";', "content", "empty"),
        ("nocase;", "nocase", "preceding content"),
        ('pcre:"/a/q";', "pcre", "unknown pcre flag"),
        ('pcre:"/(/";', "pcre", "cannot compile"),
        ("byte_test:2,~,1,0;", "byte_test", "bad operator"),
        ("byte_test:9,=,1,0;", "byte_test", "out of range"),
        ('content:"x"; within:nope;', "within", "unknown variable"),
        ("classtype:no-such-class;", "classtype", "unknown classtype"),
        ("flow:to_server,to_client;", "flow", "together"),
        ("flow:sideways;", "flow", "unknown flow option"),
        ("flags:Q;", "flags", "unknown flag"),
        ("dsize:5<>2;", "dsize", "range"),
        ("threshold:type limit, track by_nothing, count 1, seconds 1;", "threshold", "track"),
        ("threshold:type sometimes, track by_src, count 1, seconds 1;", "threshold", "type"),
        ("flowbits:set,a|b;", "flowbits", "only valid with isset"),
        ("flowbits:frob,a;", "flowbits", "unknown flowbits command"),
        ('http.host; content:"Example.com";', "content", "lower case"),
        ('content:"a"; fast_pattern; content:"b"; fast_pattern;', "fast_pattern", "only one"),
        ('to_sha256; content:"a";', "to_sha256", "sticky buffer"),
        ("dataset:isset,nope;", "dataset", "needs a sticky buffer"),
        ("http.uri; dataset:isset,ua-seen;", "dataset", "type"),
        ('msg:"a"; msg:"b";', "msg", "more than once"),
        # Suricata: request and response buffers, or a flow direction against the buffers
        ('http.method; content:"GET"; http.stat_code; content:"2";', "http.method", "conflicting"),
        ('flow:to_server; http.stat_code; content:"200";', "flow", "conflicting directions"),
        ('flow:to_client; dns.query; content:"a";', "flow", "conflicting directions"),
        ('ja3.hash; content:"e7eca2ba";', "content", "32-character hash"),
    ],
)
def test_bad_options_rejected(opts: str, keyword: str, reason: str) -> None:
    rs = RuleSet.from_text(f"alert tcp any any -> any any ({opts} sid:77;)")
    assert rs.stats.loaded == 0
    (e,) = rs.rejected
    assert e.keyword == keyword and e.sid == 77 and e.line == 1
    assert reason in e.reason


@pytest.mark.parametrize(
    ("opts", "keyword", "value"),
    [
        ('content:"abc"; depth:1x;', "depth", "'1x'"),
        ('http.uri; xor:"zz"; content:"a";', "xor", "'zz'"),
        ('content:"a"; byte_test:2,=,1,0,bitmask zz;', "byte_test", "'zz'"),
        ("byte_test:2z,=,1,0;", "byte_test", "'2z'"),
        ("http.uri; bsize:abc;", "bsize", "'abc'"),
        ("urilen:abc;", "urilen", "'abc'"),
        ("http.user_agent; dataset:isset,ua,type string,load /nonexistent/x;", "dataset", "x'"),
        ("flags:Q;", "flags", "'Q'"),
        ("dsize:5<>2;", "dsize", "'5<>2'"),
        ("fragbits:Z;", "fragbits", "'Z'"),
        ("flow.pkts:abc;", "flow.pkts", "'abc'"),
        ("tls.version:9.9;", "tls.version", "'9.9'"),
    ],
)
def test_bad_keyword_values_name_file_line_sid_keyword_and_value(
    tmp_path: Path, opts: str, keyword: str, value: str
) -> None:
    # Handlers let the value's ValueError through; the keyword dispatcher makes it the rejection.
    f = tmp_path / "local.rules"
    f.write_text(f"# header\nalert tcp any any -> any any ({opts} sid:77;)\n")
    rs = RuleSet.load(paths=[f])
    (e,) = rs.rejected
    assert (e.keyword, e.sid, e.line) == (keyword, 77, 2)
    assert e.reason.startswith("bad value: ") and value in e.reason
    assert str(e).startswith(f"{f}:2: sid 77 keyword '{keyword}': bad value: ")


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        ('alert tcp any any -> any any (msg:"x";)', "no sid"),
        ("yell tcp any any -> any any (sid:1;)", "unknown action"),
        ("alert frob any any -> any any (sid:1;)", "unknown protocol"),
        ("alert tcp $NOPE any -> any any (sid:1;)", "undefined address variable"),
        ("alert tcp any 70000 -> any any (sid:1;)", "bad port"),
        ("alert tcp 10.0.0.0/33 any -> any any (sid:1;)", "bad address"),
        ("alert tcp any any any any (sid:1;)", "bad header"),
        ('alert tcp any any -> any any (msg:"unterminated; sid:1;)', "unterminated"),
        ('alert tcp any any -> any any msg:"x"; sid:1;', "no '( options )'"),
        ('alert tcp any any -> any any (sid:1; content:"a")', "not terminated"),
    ],
)
def test_bad_rules_rejected(rule: str, reason: str) -> None:
    rs = RuleSet.from_text(rule)
    assert rs.stats.loaded == 0 and rs.stats.rejected == 1
    assert reason in rs.rejected[0].reason


def test_duplicate_sid_keeps_higher_rev() -> None:
    rs = RuleSet.from_text(
        "alert tcp any any -> any any (sid:5; rev:2;)\nalert udp any any -> any any (sid:5; rev:1;)\n"
        "alert icmp any any -> any any (sid:5; rev:3;)\nalert tcp any any -> any any (sid:5; gid:2;)\n"
    )
    assert rs.stats.loaded == 2 and rs.stats.duplicates == 2
    assert sorted((r.gid, r.sid, r.rev, r.proto) for r in rs.rules) == [
        (1, 5, 3, "icmp"),
        (2, 5, 0, "tcp"),
    ]
    reasons = sorted((e.line, e.reason) for e in rs.rejected)
    assert reasons[0][0] == 1 and "rev 2 replaced by rev 3 at <text>:3" in reasons[0][1]
    assert reasons[1][0] == 2 and "duplicate sid 5 (rev 2 kept" in reasons[1][1]


def test_unreadable_file_reported(tmp_path: Path) -> None:
    rs = RuleSet.load(paths=[tmp_path / "missing.rules"])
    assert rs.stats.loaded == 0 and "cannot read" in rs.rejected[0].reason


def test_default_variables_match_suricata_yaml() -> None:
    v = Variables.default()
    home = v.address("$HOME_NET")
    for ip in ("10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1"):
        assert home.contains_ip(ip)
    for ip in ("8.8.8.8", "172.32.0.1", "2001:db8::1"):
        assert not home.contains_ip(ip)
    ext = v.address("$EXTERNAL_NET")
    assert ext.contains_ip("8.8.8.8") and ext.contains_ip("2001:db8::1")
    assert not ext.contains_ip("10.0.0.1")
    assert v.port("$HTTP_PORTS").contains(80) and not v.port("$HTTP_PORTS").contains(8080)
    assert not v.port("$SHELLCODE_PORTS").contains(80) and v.port("$SHELLCODE_PORTS").contains(81)
    fd = v.port("$FILE_DATA_PORTS")
    assert fd.contains(80) and fd.contains(110) and fd.contains(143) and not fd.contains(25)
    for name, port in [("ORACLE_PORTS", 1521), ("SSH_PORTS", 22), ("DNP3_PORTS", 20000),
                       ("MODBUS_PORTS", 502), ("FTP_PORTS", 21), ("GENEVE_PORTS", 6081),
                       ("VXLAN_PORTS", 4789), ("TEREDO_PORTS", 3544)]:  # fmt: skip
        assert v.port("$" + name).contains(port)
    for name in ("HTTP_SERVERS", "SMTP_SERVERS", "SQL_SERVERS", "DNS_SERVERS", "TELNET_SERVERS",
                 "DC_SERVERS", "DNP3_SERVER", "DNP3_CLIENT", "MODBUS_CLIENT", "MODBUS_SERVER",
                 "ENIP_CLIENT", "ENIP_SERVER"):  # fmt: skip
        assert v.address("$" + name).contains_ip("192.168.3.4")
    assert v.address("$AIM_SERVERS").contains_ip("8.8.8.8")


def test_address_and_port_groups() -> None:
    v = Variables.default()
    a = v.address("[10.0.0.0/8,![10.1.0.0/16,!10.1.1.0/24],192.0.2.1-192.0.2.3]")
    assert a.contains_ip("10.2.0.1") and not a.contains_ip("10.1.2.3") and a.contains_ip("10.1.1.9")
    assert a.contains_ip("192.0.2.2") and not a.contains_ip("192.0.2.4")
    only_neg = v.address("[!1.2.3.4]")
    assert only_neg.contains_ip("1.2.3.5") and not only_neg.contains_ip("1.2.3.4")
    assert only_neg.contains_ip("::1")
    assert v.address("[2001:db8::/32]").contains_ip("2001:db8::5")
    p = v.port("[1:80,![2,4]]")
    assert p.contains(1) and p.contains(3) and not p.contains(2) and not p.contains(81)
    assert v.port("1024:").contains(65535) and not v.port("1024:").contains(1023)
    assert v.port(":1023").contains(0) and not v.port(":1023").contains(1024)
    with pytest.raises(GroupError, match="undefined"):
        v.address("$NOPE")
    v2 = Variables(address_groups={"A": "$B", "B": "$A"})
    with pytest.raises(GroupError, match="loop"):
        v2.address("$A")
    v3 = Variables(address_groups={"HOME_NET": "any", "EXTERNAL_NET": "!$HOME_NET"})
    with pytest.raises(GroupError, match="matches no address"):
        v3.address("$EXTERNAL_NET")  # 'not any' is an invalid setting, as Suricata says
    with pytest.raises(GroupError, match="unbalanced"):
        v.port("[1,2]]")


def test_variables_from_suricata_yaml(tmp_path: Path) -> None:
    y = tmp_path / "suricata.yaml"
    y.write_text(
        '%YAML 1.1\n---\nvars:\n  address-groups:\n    HOME_NET: "[10.10.0.0/16]"\n'
        '    EXTERNAL_NET: "!$HOME_NET"\n  port-groups:\n    HTTP_PORTS: "[80,8080]"\n'
        "outputs:\n  - eve-log:\n      enabled: yes\n"
    )
    v = Variables.from_suricata_yaml(y)
    assert v.address("$HOME_NET").contains_ip("10.10.1.1")
    assert not v.address("$HOME_NET").contains_ip("10.11.1.1")
    assert v.port("$HTTP_PORTS").contains(8080)
    assert v.port("$SSH_PORTS").contains(22)  # defaults kept for what the file leaves out
    y.write_text('vars:\n  address-groups:\n    HOME_NET: "[10.0.0.0/99]"\n')
    with pytest.raises(GroupError, match=r"suricata.yaml:3: HOME_NET"):
        Variables.from_suricata_yaml(y)


def test_classification_file(tmp_path: Path) -> None:
    d = Classification.default()
    assert len(d.types) >= 40 and d.get("misc-activity").priority == 3  # type: ignore[union-attr]
    f = tmp_path / "classification.config"
    f.write_text("config classification: my-class,My Class,1\nconfig classification: broken\n")
    c = Classification.load(f)
    assert c.get("my-class").description == "My Class"  # type: ignore[union-attr]
    assert c.errors and ":2:" in c.errors[0]
    rs = RuleSet.from_text(
        "alert tcp any any -> any any (classtype:my-class; sid:1;)", classification=c
    )
    assert rs.rules[0].priority == 1 and rs.rules[0].category == "My Class"


def test_rejected_rule_is_not_half_loaded() -> None:
    # the bad rule sets a flowbit; since it is rejected, nothing may set it
    rs = RuleSet.from_text(
        'alert tcp any any -> any any (content:"a"; flowbits:set,x; nosuchkw; sid:1;)\n'
        "alert tcp any any -> any any (flowbits:isset,x; sid:2;)\n"
    )
    assert [r.sid for r in rs.rules] == [2]
    assert rs.summary() == "1 rules loaded, 1 rejected (1 files)"


def test_suricata_yaml_rule_files_classification_vars(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "a.rules").write_text(
        "alert tcp $HOME_NET any -> any any (classtype:local; sid:1;)\n"
    )
    (tmp_path / "rules" / "b.rules").write_text("alert udp any any -> any $DNS_PORTS (sid:2;)\n")
    (tmp_path / "classification.config").write_text("config classification: local,Local class,2\n")
    (tmp_path / "threshold.config").write_text("suppress gen_id 1, sig_id 2\n")
    (tmp_path / "suricata.yaml").write_text(
        '%YAML 1.1\n---\nvars:\n  address-groups:\n    HOME_NET: "[10.9.0.0/16]"\n'
        "  port-groups:\n    DNS_PORTS: 53\n"
        "default-rule-path: rules\nrule-files:\n  - a.rules\n  - b.rules\n  - gone.rules\n"
        "classification-file: classification.config\nthreshold-file: threshold.config\n"
        "outputs:\n  - eve-log:\n      enabled: yes\n"
        "datasets:\n  defaults:\n    memcap: 10mb\n  bad-ua:\n    type: string\n    load: ua.lst\n"
    )
    (tmp_path / "ua.lst").write_text(base64.b64encode(b"EvilBot").decode() + "\n")
    (tmp_path / "rules" / "b.rules").write_text(
        "alert udp any any -> any $DNS_PORTS (sid:2;)\n"
        "alert http any any -> any any (http.user_agent; dataset:isset,bad-ua; sid:3;)\n"
    )
    rs = RuleSet.from_suricata_yaml(tmp_path / "suricata.yaml")
    assert sorted(r.sid for r in rs.rules) == [1, 2, 3]
    assert rs.datasets.apply("isset", "bad-ua", b"EvilBot")  # declared in suricata.yaml
    assert any(r.category == "Local class" for r in rs.rules)
    assert rs.stats.rejected == 1 and "gone.rules" in rs.rejected[0].reason
    assert rs._suppress and rs._suppress[0].sid == 2  # threshold-file was read
    r1 = next(r for r in rs.rules if r.sid == 1)
    assert r1.src.contains_ip("10.9.1.1") and not r1.src.contains_ip("10.8.1.1")


def test_every_keyword_with_hostile_values_is_loaded_or_rejected_never_crashes() -> None:
    from vmshield.engines.net.packet import Packet
    from vmshield.engines.net.rules import FlowDetectState, InspectContext
    from vmshield.engines.net.rules.parser import KEYWORDS, LEGACY, STICKY
    from vmshield.engines.net.rules.transforms import TRANSFORMS

    values = [None, "", "x", "-1", "99999999999", "1,2,3", '"a"', "!", "a b, c d", "0x", "1<>0",
              "bytes 1, offset 0, oper /, rvalue 0, result r", "1,0,v,multiplier zz", "\\"]  # fmt: skip
    names = sorted(set(KEYWORDS) | set(LEGACY) | set(STICKY) | set(TRANSFORMS))
    lines, sid = [], 0
    for kw in names:
        for v in values:
            sid += 1
            opt = f"{kw};" if v is None else f"{kw}:{v};"
            lines.append(f'alert tcp any any -> any any (content:"ab"; {opt} sid:{sid};)')
            sid += 1
            lines.append(f"alert http any any -> any any (http.uri; {opt} sid:{sid};)")
    rs = RuleSet.from_text("\n".join(lines))
    assert rs.stats.loaded + rs.stats.rejected == sid
    assert all(e.reason and e.sid is not None for e in rs.rejected)
    p = Packet(ts=1.0, raw=b"", ip_version=4, src="10.0.0.1", dst="10.0.0.2",
               src_bytes=b"\n\0\0\1", dst_bytes=b"\n\0\0\2", proto=6, sport=1, dport=80,
               payload=b"ab\x00\x01 a b c 0x1 YWJj", tcp_flags=0x18)  # fmt: skip
    rs.match(InspectContext(p, "to_server", True, FlowDetectState(), None,
                            {"http.uri": b"/ab?x=YWJj"}, "http", 0))  # fmt: skip


def test_requires_keyword() -> None:
    rs = RuleSet.from_text(
        "alert tcp any any -> any any (requires: version >= 7.0.3; sid:1;)\n"
        "alert tcp any any -> any any (requires: version >= 8; sid:2;)\n"
        "alert tcp any any -> any any (requires: version >= 6 < 7 | >= 7.0.1; sid:3;)\n"
        "alert tcp any any -> any any (requires: feature geoip; sid:4;)\n"
    )
    assert sorted(r.sid for r in rs.rules) == [1, 3]
    reasons = {e.sid: e.reason for e in rs.rejected}
    assert "version >= 8" in reasons[2] and "feature 'geoip'" in reasons[4]


def test_address_and_port_groups_agree_with_brute_force() -> None:
    import ipaddress as ipa

    from hypothesis import given, settings
    from hypothesis import strategies as st

    net = st.builds(lambda a, p: f"10.0.0.{a}/{p}", st.integers(0, 255), st.integers(24, 32))
    item = st.tuples(st.booleans(), net)

    def brute(items: list[tuple[bool, str]], ip: int) -> bool:
        pos = [n for neg, n in items if not neg]
        negs = [n for neg, n in items if neg]
        a = ipa.ip_address(ip)
        inpos = not pos or any(a in ipa.ip_network(n, strict=False) for n in pos)
        return inpos and not any(a in ipa.ip_network(n, strict=False) for n in negs)

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(item, min_size=1, max_size=5),
        st.lists(
            st.tuples(st.booleans(), st.integers(0, 300), st.integers(0, 300)),
            min_size=1,
            max_size=4,
        ),
    )
    def check(items: list[tuple[bool, str]], ports: list[tuple[bool, int, int]]) -> None:
        v = Variables.default()
        expr = "[" + ",".join(("!" if neg else "") + n for neg, n in items) + "]"
        got = (
            v.address(expr)
            if any(brute(items, int(ipa.ip_address("10.0.0.0")) + i) for i in range(256))
            or not any(not n for n, _ in items)
            else None
        )
        if got is None:
            return
        for i in range(256):
            ip = int(ipa.ip_address("10.0.0.0")) + i
            assert got.contains(4, ip) == brute(items, ip), (expr, i)
        # ports: ranges a:b with negation, checked over 0..310
        pexpr = (
            "["
            + ",".join(("!" if neg else "") + f"{min(a, b)}:{max(a, b)}" for neg, a, b in ports)
            + "]"
        )
        pos = [(min(a, b), max(a, b)) for neg, a, b in ports if not neg]
        negs = [(min(a, b), max(a, b)) for neg, a, b in ports if neg]

        def pbrute(p: int) -> bool:
            return (not pos or any(lo <= p <= hi for lo, hi in pos)) and not any(
                lo <= p <= hi for lo, hi in negs
            )

        if not any(pbrute(p) for p in range(65536)):
            with pytest.raises(GroupError):
                v.port(pexpr)
            return
        ps = v.port(pexpr)
        for p in range(311):
            assert ps.contains(p) == pbrute(p), (pexpr, p)

    check()
