"""Scope computation of relay spec §6.4/§6.5, with the spec's own example tables."""

from __future__ import annotations

import pytest

from relay.auth.scope import AuthError, public_scope, scope_from_grants, split_target

TOKEN = ("room/123", ["alice"], [""])


def texts(patterns) -> tuple[str, ...]:
    return tuple(p.text for p in patterns)


@pytest.mark.parametrize(
    ("path", "root", "publish", "subscribe"),
    [
        ("/room/123", "room/123", ("alice/**",), ("**",)),
        ("/room/123/alice", "room/123/alice", ("**",), ("**",)),
        ("/room/123/bob", "room/123/bob", (), ("**",)),
        ("/room/123/alice/cam/hd", "room/123/alice/cam/hd", ("**",), ("**",)),
        ("/room", "room", ("123/alice/**",), ("123/**",)),
        ("/", "", ("room/123/alice/**",), ("room/123/**",)),
    ],
)
def test_token_scope_examples(path, root, publish, subscribe) -> None:
    s = scope_from_grants(path, *TOKEN)
    assert (s.root, texts(s.publish), texts(s.subscribe)) == (root, publish, subscribe)


@pytest.mark.parametrize("path", ["/secret", "/room/1234"])
def test_token_scope_rejects(path) -> None:
    with pytest.raises(AuthError):
        scope_from_grants(path, *TOKEN)


def test_public_examples() -> None:
    assert texts(public_scope("/anon", ["anon"], ["anon"]).publish) == ("**",)
    s = public_scope("/", ["anon"], ["anon"])
    assert s.root == "" and s.can_subscribe("anon/x") and not s.can_subscribe("secret")
    for bad in ("/secret", "/anonymous"):
        with pytest.raises(AuthError):
            public_scope(bad, ["anon"], ["anon"])
    everything = public_scope("/any/where", [""], [""])
    assert everything.can_publish("x") and everything.watch_prefixes("") == [""]
    sub_only = public_scope("/demo/x", ["demo"], [])
    assert sub_only.publish == () and texts(sub_only.subscribe) == ("**",)


def test_watch_prefixes_and_target() -> None:
    s = public_scope("/", ["anon", "demo/live"], [])
    assert s.watch_prefixes("") == ["anon", "demo/live"]
    assert s.watch_prefixes("anon/x") == ["anon/x"]
    assert s.watch_prefixes("demo") == ["demo/live"]
    assert s.watch_prefixes("other") == []
    assert split_target("/a%20b?jwt=x&jwt=") == ("/a%20b", {"jwt": ["x", ""]})
