"""Path patterns (relay-0.17.md §2): syntax, matching, containment, rebasing, and how scopes,
tokens and public rules use them, with every row of the §2.3 tables."""

from __future__ import annotations

import json
import logging

import jwt
import pytest

from relay.auth.authorizer import Authorizer, read_public_rules
from relay.auth.keys import generate_key
from relay.auth.pattern import (
    EmptySegment,
    Pattern,
    PatternError,
    TooManyDoubleStars,
    TooManySegments,
    TooManyStars,
    covers,
    parse_all,
    union,
)
from relay.auth.scope import AuthError, public_scope, scope_from_patterns
from relay.auth.tokens import TokenVerifier, claims_from_payload, sign_token
from relay.config.values import ConfigError


def texts(patterns) -> tuple[str, ...]:
    return tuple(p.text for p in patterns)


def pats(*text: str) -> list[Pattern]:
    return [Pattern.parse(t) for t in text]


# ----------------------------------------------------------------------------- §2.1 syntax
@pytest.mark.parametrize("text", ["a", "a/b/c", "*", "pre*", "*suf", "pre*suf", "**", "a/**", "**/a", "a/**/b",
                                  "room/*/chat", "", "x" + "/x" * 31, "a-b.c_d", ".internal/**"])
def test_valid_patterns_parse_and_print_back(text: str) -> None:
    assert Pattern.parse(text).text == text


@pytest.mark.parametrize(("text", "error"), [
    ("/a", EmptySegment), ("a/", EmptySegment), ("a//b", EmptySegment), ("/", EmptySegment),
    ("**/a/**", TooManyDoubleStars), ("**/**", TooManyDoubleStars),
    ("a*b*c", TooManyStars), ("***", TooManyStars), ("a/*b*", TooManyStars),
    ("x" + "/x" * 32, TooManySegments),
])
def test_invalid_patterns_raise_a_named_error(text: str, error: type[PatternError]) -> None:
    with pytest.raises(error, match="pattern") as info:
        Pattern.parse(text)
    assert isinstance(info.value, ValueError) and repr(text)[1:-1][:10] in str(info.value)


@pytest.mark.parametrize(("written", "canonical"), [
    ("*/**", "**/*"), ("*/*/**", "**/*/*"), ("a/*/**/b", "a/**/*/b"), ("**/*", "**/*"), ("a/*/b/**", "a/*/b/**"),
])
def test_canonical_form_and_equality(written: str, canonical: str) -> None:
    assert Pattern.parse(written).text == canonical
    assert Pattern.parse(written) == Pattern.parse(canonical)
    assert Pattern.parse("a/*") != Pattern.parse("a/**")


# ----------------------------------------------------------------------------- §2.2 matching
@pytest.mark.parametrize(("pattern", "yes", "no"), [
    ("foo", ["foo", "/foo/"], ["foobar", "foo/bar", ""]),
    ("foo/**", ["foo", "foo/bar", "foo/bar/baz"], ["foobar", "fo", ""]),
    ("**", ["", "a", "a/b/c"], []),
    ("live/*", ["live/a", "live//b"], ["live", "live/a/b", "alive/a"]),
    ("room/*/chat", ["room/1/chat", "room/abc/chat"], ["room/chat", "room/1/video", "room/1/2/chat"]),
    ("", [""], ["a"]),
    ("cam-*", ["cam-1", "cam-"], ["cam", "xcam-1"]),
    ("*.mp4", ["a.mp4", ".mp4"], ["a.mp3"]),
    ("a*a", ["aa", "aba"], ["a"]),  # prefix and suffix never overlap
    ("**/chat", ["chat", "a/b/chat"], ["chat/a"]),
    ("a/**/z", ["a/z", "a/b/z", "a/b/c/z"], ["a", "z", "a/z/b"]),
    ("**/*/x", ["a/x", "a/b/x"], ["x"]),
])
def test_matching_whole_paths_on_segment_boundaries(pattern: str, yes: list[str], no: list[str]) -> None:
    p = Pattern.parse(pattern)
    assert [path for path in yes if not p.matches(path)] == []
    assert [path for path in no if p.matches(path)] == []


# ----------------------------------------------------------------------------- containment
@pytest.mark.parametrize(("outer", "inner"), [
    ("**", "a/b"), ("**", "**"), ("**", ""), ("a/**", "a"), ("a/**", "a/*/c"), ("a/**", "a/b/**"),
    ("*", "cam-*"), ("cam*", "cam-*"), ("*-hd", "cam*-hd"), ("**/*", "x/**"),
    ("*/**", "a"), ("**/x", "**/*/x"), ("**/*/x", "**/y/x"), ("a/**/*", "a/b/**"), ("room/*/chat", "room/1/chat"),
    ("*/chat", "room/chat"), ("a/*", "a/b"), ("", ""),
])
def test_contains(outer: str, inner: str) -> None:
    assert Pattern.parse(outer).contains(Pattern.parse(inner))


@pytest.mark.parametrize(("outer", "inner"), [
    ("a", "a/**"), ("a/*", "a/**"), ("**/*", "**"), ("**/*/x", "**/x"), ("a/b/**", "a/**"), ("cam-*", "*"),
    ("cam-*", "cam*"), ("a/**", "**"), ("*/chat", "room/*"), ("", "**"), ("a", ""), ("a/*", "b/*"),
    ("**/x", "**"), ("a/**/z", "a/**"),
])
def test_does_not_contain(outer: str, inner: str) -> None:
    assert not Pattern.parse(outer).contains(Pattern.parse(inner))


def test_union_drops_contained_members_and_covers_needs_one_member() -> None:
    assert texts(union(pats("a/b", "a/**", "a/c/**", "b"))) == ("a/**", "b")
    # Grants keep contained members, which may name a reserved prefix (`**` never reaches it).
    assert texts(parse_all(["x", "x", "*", ".internal/**"])) == ("x", "*", ".internal/**")
    # `a/*` and `a` together match what `a/**` matches one level deep, but neither alone
    # contains `a/**`: members never combine.
    assert not covers(tuple(pats("a", "a/*")), Pattern.parse("a/**"))
    assert covers(tuple(pats("b", "a/**")), Pattern.parse("a/x"))


# ----------------------------------------------------------------------------- §2.3, §2.5 helpers
@pytest.mark.parametrize(("pattern", "suffix", "rebased"), [
    ("**", "a/b", ("**",)), ("*/chat", "anon", ("chat",)), ("demo/**", "demo/bar", ("**",)),
    ("demo/**", "demo", ("**",)), ("demo/**", "other", ()), ("anon/**", "rooms", ()), ("*/chat", "rooms/123", ()),
    ("a/b", "a", ("b",)), ("a/b", "a/b", ("",)), ("a/b", "a/b/c", ()), ("room/*/chat", "room", ("*/chat",)),
    ("**/chat", "a/chat", ("**/chat", "")), ("a/*", "", ("a/*",)),
])
def test_rebase_keeps_what_lies_at_or_below(pattern: str, suffix: str, rebased: tuple[str, ...]) -> None:
    assert texts(Pattern.parse(pattern).rebased(suffix)) == rebased


def test_prefix_and_literal_head() -> None:
    assert Pattern.parse("my-stream/**").prefixed("demo").text == "demo/my-stream/**"
    assert Pattern.parse("**").prefixed("demo").text == "demo/**"
    assert Pattern.parse("x").prefixed("").text == "x"
    heads = {"room/*/chat": "room", "*/chat": "", "a/b/**": "a/b", "a/b": "a/b", "a/cam*/x": "a", "": ""}
    assert {p: Pattern.parse(p).literal_head() for p in heads} == heads
    assert Pattern.subtree("/a//b/").text == "a/b/**" and Pattern.subtree("").text == "**"
    with pytest.raises(PatternError):
        Pattern.subtree("a*")  # a prefix names paths literally, and `*` cannot be escaped
    with pytest.raises(PatternError):
        Pattern.parse("x").prefixed("a*")


# ----------------------------------------------------------------------------- §2.3 tables
@pytest.mark.parametrize(("dialed", "root", "granted"), [
    ("/demo/bar", "demo/bar", ("**",)), ("/demo", "demo", ("**",)), ("/", "", ("demo/**",)), ("/other", None, None),
])
def test_table_grant_demo(dialed: str, root: str | None, granted: tuple[str, ...] | None) -> None:
    if root is None:
        with pytest.raises(AuthError):
            scope_from_patterns(dialed, "", pats("demo/**"), pats("demo/**"))
        return
    s = scope_from_patterns(dialed, "", pats("demo/**"), pats("demo/**"))
    assert (s.root, texts(s.publish), texts(s.subscribe)) == (root, granted, granted)


PUBLIC_PUBLISH = ["anon/**"]
PUBLIC_SUBSCRIBE = ["anon/**", "*/chat"]


@pytest.mark.parametrize(("dialed", "root", "publish", "subscribe"), [
    ("/", "", ("anon/**",), ("anon/**", "*/chat")),
    ("/anon", "anon", ("**",), ("**", "chat")),
    ("/rooms", "rooms", (), ("chat",)),
    ("/rooms/123", None, None, None), ("/other/room", None, None, None), ("/anonymous/room", None, None, None),
])
def test_table_public_rules_are_rooted_at_slash(dialed, root, publish, subscribe) -> None:
    if root is None:
        with pytest.raises(AuthError, match="a token is required") as info:
            public_scope(dialed, PUBLIC_SUBSCRIBE, PUBLIC_PUBLISH)
        assert info.value.status == 401  # refused, never an outage
        return
    s = public_scope(dialed, PUBLIC_SUBSCRIBE, PUBLIC_PUBLISH)
    assert (s.root, texts(s.publish), texts(s.subscribe)) == (root, publish, subscribe)


def test_table_token_root_demo() -> None:
    s = scope_from_patterns("/", "demo", pats("my-stream/**"), pats("**"))
    assert (texts(s.publish), texts(s.subscribe)) == (("demo/my-stream/**",), ("demo/**",))


# ----------------------------------------------------------------------------- scopes
def test_scope_with_pattern_grants() -> None:
    s = scope_from_patterns("/", "", pats("alice/**"), pats("*/chat", "room/*/chat"))
    assert s.can_publish("alice") and s.can_publish("alice/cam") and not s.can_publish("alicex")
    assert s.can_subscribe("room1/chat") and not s.can_subscribe("room1/video")
    assert s.can_subscribe("room/7/chat") and not s.can_subscribe("room/7/video")
    assert s.can_see("x/chat") and not s.can_see("x/chat/more")
    # Wildcards never name a reserved prefix: `*/chat` does not reach `.internal/chat`.
    assert not s.can_subscribe(".internal/chat") and not s.can_see(".stats/chat")
    assert s.watch_prefixes("") == [""]  # `*/chat` has an empty literal head: nested `room` coalesced
    assert s.watch_prefixes("room1") == ["room1"]
    assert s.watch_prefixes("room1/chat/x") == []  # nothing at or below matches


def test_watch_prefixes_are_literal_heads_coalesced() -> None:
    s = scope_from_patterns("/", "", [], pats("room/*/chat", "room/a/**", "live/*", "live/*", "vod/x/*"))
    assert s.watch_prefixes("") == ["room", "live", "vod/x"]
    assert s.watch_prefixes("room/a") == ["room/a"]
    assert s.watch_prefixes("vod") == ["vod/x"]
    assert s.watch_prefixes("other") == []


def test_reserved_prefixes_need_a_grant_that_names_them() -> None:
    named = scope_from_patterns("/", "", pats(".internal/origins/*"), pats("**", ".stats/**"))
    assert named.can_publish(".internal/origins/x") and not named.can_publish(".internal/origins/x/y")
    assert named.can_see(".stats/node") and not named.can_see(".internal/origins/x")
    root = scope_from_patterns("/.internal", "", pats("**"), pats("**"))
    assert not root.can_publish("origins/x")
    # A cluster token grants `""` and `.internal`: the second must survive beside the first.
    cluster = claims_from_payload({"put": ["", ".internal"], "get": ["", ".internal"]})
    s = scope_from_patterns("/", cluster.root, cluster.publish, cluster.subscribe)
    assert s.can_publish(".internal/origins/x") and s.can_see(".internal/origins/x")


# ----------------------------------------------------------------------------- tokens
def test_token_pattern_claims(caplog) -> None:
    c = claims_from_payload({"root": "demo", "publish": ["alice/**"], "subscribe": "*/chat"})
    assert (c.root, texts(c.publish), texts(c.subscribe)) == ("demo", ("alice/**",), ("*/chat",))
    # `publish` is exact: `cam` is one broadcast, where legacy `put` `cam` is a subtree.
    assert texts(claims_from_payload({"publish": "cam", "get": "cam"}).subscribe) == ("cam/**",)
    assert texts(claims_from_payload({"publish": "cam"}).publish) == ("cam",)
    assert texts(claims_from_payload({"put": "/a//b/"}).publish) == ("a/b/**",)
    refused = {
        "both publish spellings": {"put": "a", "publish": ["a/**"]},
        "both subscribe spellings": {"get": "a", "subscribe": ["a/**"]},
        "null put": {"put": None, "get": ""},
        "null subscribe": {"subscribe": None, "publish": "a"},
        "star in a prefix": {"put": "a*"},
        "star in the root": {"root": "a*", "get": ""},
        "dot segment in a pattern": {"subscribe": ["a/../b"]},
        "not strings": {"publish": [1]},
    }
    for name, payload in refused.items():
        with pytest.raises(AuthError):
            claims_from_payload(payload)
        assert name
    caplog.set_level(logging.WARNING, "relay.auth")
    with pytest.raises(AuthError, match="claim subscribe has a bad pattern") as info:
        claims_from_payload({"subscribe": ["ok/**", "a/**/b/**"]})
    assert info.value.status == 401
    assert any("claim subscribe" in r.getMessage() and "'**'" in r.getMessage() for r in caplog.records)


def test_sign_writes_legacy_form_only_for_subtrees(tmp_path) -> None:
    key = generate_key("HS256", "k")

    def payload(token: str) -> dict:
        return jwt.decode(token, key.sign_key, algorithms=["HS256"])

    assert payload(sign_token(key, put=["alice"], subscribe=["**"])) == {"root": "", "put": "alice", "get": ""}
    assert payload(sign_token(key, put=["alice"], subscribe=["*/chat"])) == {
        "root": "", "publish": "alice/**", "subscribe": "*/chat"}


def test_key_scope_caps_pattern_grants(tmp_path) -> None:
    from relay.auth.keys import b64url_encode, parse_jwk

    key = generate_key("HS256", "s")
    key.jwk["scope"] = {"root": "org", "publish": ["*/cam"], "get": [""]}
    path = tmp_path / "s.jwk"
    path.write_text(b64url_encode(json.dumps(key.jwk).encode()))
    verifier = TokenVerifier(key_path=str(path))
    signer = parse_jwk(json.dumps(key.jwk))
    assert texts(verifier.verify(sign_token(signer, root="org", publish=["a/cam"])).publish) == ("a/cam",)
    for overreach in (["a/**"], ["*/*"], ["a/cam/**"]):
        with pytest.raises(AuthError, match="beyond its key's scope"):
            verifier.verify(sign_token(signer, root="org", publish=overreach))


# ----------------------------------------------------------------------------- public rules
def test_public_rules_without_wildcard_keep_the_seed_reading(caplog) -> None:
    caplog.set_level(logging.INFO, "relay.auth")
    logged: set[tuple[str, str]] = set()
    assert texts(read_public_rules(["anon", "", "*/chat", "anon"], "public_subscribe", logged)) == (
        "anon/**", "**", "*/chat")
    assert texts(read_public_rules(["anon", "*/chat"], "public_subscribe", logged)) == ("anon/**", "*/chat")
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("auth: public_subscribe 'anon' has no wildcard: read as the subtree 'anon/**' as "
                       "the seed did; write 'anon/**' to say so") == 1
    assert not any("*/chat" in line for line in lines)
    with pytest.raises(PatternError):
        read_public_rules(["a/**/**"], "public_publish")


def test_authorizer_public_patterns() -> None:
    auth = Authorizer(TokenVerifier(), ["*/chat"], [])
    assert auth("/x/chat").can_subscribe("") and auth("/").can_subscribe("x/chat")
    assert not auth("/").can_subscribe("x/other")
    with pytest.raises(AuthError):
        auth("/x/other")
    auth.replace(TokenVerifier(), ["x/*"], [])
    assert auth("/").can_subscribe("x/other") and not auth("/").can_subscribe("x/chat/y")


def test_config_refuses_a_bad_public_pattern(tmp_path) -> None:
    from relay.config import load_config

    config = tmp_path / "relay.toml"
    config.write_text('[server]\nbind = ["127.0.0.1:4443"]\n[server.tls]\ngenerate = ["localhost"]\n'
                      '[auth.public]\nsubscribe = ["a/**/b/**"]\n')
    with pytest.raises(ConfigError, match="auth.public_subscribe"):
        load_config([str(config)], {})


def test_token_cli_signs_patterns(tmp_path, capsys) -> None:
    from relay.auth.cli import main

    key_file = str(tmp_path / "k.jwk")
    assert main(["generate", "--out", key_file]) == 0
    assert main(["sign", "--key", key_file, "--publish", "alice", "--subscribe", "*/chat"]) == 0
    token = capsys.readouterr().out.strip()
    (tmp_path / "t.jwt").write_text(token)
    assert main(["verify", "--key", key_file, "--in", str(tmp_path / "t.jwt")]) == 0
    assert json.loads(capsys.readouterr().out) == {"root": "", "publish": ["alice/**"], "subscribe": ["*/chat"],
                                                    "exp": None}
    assert main(["sign", "--key", key_file, "--publish", "a/**/**"]) == 1
    assert "more than one '**'" in capsys.readouterr().err


# ----------------------------------------------------------------------------- against brute force
SMALL_SEGMENTS = ["a", "*", "a*", "*b", "**"]
SMALL_VALUES = ["a", "b", "ab", "z"]


def small_patterns() -> list[Pattern]:
    import itertools

    out = {Pattern.parse("")}
    for n in (1, 2, 3):
        for segments in itertools.product(SMALL_SEGMENTS, repeat=n):
            if segments.count("**") <= 1:
                out.add(Pattern.parse("/".join(segments)))
    return sorted(out, key=lambda p: p.text)


def small_paths(longest: int = 4) -> list[str]:
    import itertools

    return ["/".join(p) for n in range(longest + 1) for p in itertools.product(SMALL_VALUES, repeat=n)]


def test_contains_agrees_with_matching_every_small_path() -> None:
    """Containment is "every path the inner matches, the outer matches too": checked both ways for
    every pair of small patterns, over every path of up to 4 segments named from SMALL_VALUES."""
    patterns = small_patterns()
    paths = small_paths()
    matched = {p: frozenset(path for path in paths if p.matches(path)) for p in patterns}
    wrong = [(outer.text, inner.text) for outer in patterns for inner in patterns
             if outer.contains(inner) != (matched[inner] <= matched[outer])]
    assert wrong == []


def test_rebase_agrees_with_matching_every_small_path() -> None:
    paths = small_paths(3)
    wrong = []
    for pattern in small_patterns():
        for suffix in small_paths(2):
            rebased = pattern.rebased(suffix)
            for rest in paths:
                want = pattern.matches(f"{suffix}/{rest}")
                if any(r.matches(rest) for r in rebased) != want:
                    wrong.append((pattern.text, suffix, rest))
    assert wrong == []
