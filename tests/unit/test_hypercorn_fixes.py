"""webui/guard.py patches three private methods of hypercorn's WebSocket stream. These tests fail loudly on a
hypercorn whose internals moved, instead of the fixes being skipped in silence (their effects are tested in
tests/security/test_websocket_abuse.py: a too-big frame closes with 1009, no permessage-deflate, a flooding client's
socket ends)."""

from __future__ import annotations

import types

import pytest
from hypercorn.protocol import ws_stream

from webui.guard import check_hypercorn_internals, fix_hypercorn_websockets


def test_the_installed_hypercorn_has_what_the_fixes_patch_and_they_are_installed():
    check_hypercorn_internals(ws_stream)
    fix_hypercorn_websockets()
    assert ws_stream.WSStream._cryptopulse_fixed
    for method in (ws_stream.WSStream._handle_events, ws_stream.WSStream.handle, ws_stream.Handshake.accept):
        assert method.__module__ == "webui.guard", method  # ours, wrapping hypercorn's


def test_a_hypercorn_whose_internals_moved_is_refused_with_the_way_out():
    moved = types.SimpleNamespace(StreamClosed=object, Handshake=ws_stream.Handshake,
                                  WSStream=type("WSStream", (), {"handle": lambda self, event: None}))
    with pytest.raises(RuntimeError, match=r"WSStream\._handle_events.*hypercorn>=0\.18,<0\.19"):
        check_hypercorn_internals(moved)
