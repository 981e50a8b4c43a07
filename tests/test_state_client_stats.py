"""``State.add_client_stats``: a stopping player's stats are kept, and merged only when the total is read
(a merge per stopping player blocked the event loop while other players still waited for answers)."""

from __future__ import annotations

from typing import Any

import pytest

import dispatcher
import harness.runner.state
from dispatcher.stats import merge_snapshots
from harness.game import load_registry
from harness.runner.state import State


def _snapshot(n: int) -> dict[str, object]:
    server, client = dispatcher.loopback(channel_registry=load_registry())
    server.on("Intent.Attributes.RequestSnapshot", lambda env: {"attributes": {"str": 1}, "points": 1})
    for _ in range(n):
        client.request("Intent.Attributes.RequestSnapshot", None).result()
    snap = client.stats().snapshot()
    client.close()
    server.close()
    return snap


@pytest.mark.parametrize("players", [1, 2, 4])
def test_the_total_is_the_merge_of_every_stopped_player(players: int, monkeypatch: pytest.MonkeyPatch) -> None:
    st = State()
    snaps = [_snapshot(i + 1) for i in range(players)]
    expected = snaps[0]
    for snap in snaps[1:]:
        expected = merge_snapshots(expected, snap)
    merges: list[int] = []

    def counted(*snaps: dict[str, Any]) -> dict[str, Any]:
        merges.append(len(snaps))
        return merge_snapshots(*snaps)

    monkeypatch.setattr(harness.runner.state, "merge_snapshots", counted)
    for i, snap in enumerate(snaps):
        st.add_client_stats(snap, reconnects=i)
    assert merges == []  # a stopping player's snapshot is kept, not merged (the event loop is not blocked)
    assert st.client_stats == expected  # the N-way merge is the pairwise one
    assert merges == [players]  # merged when read, all at once
    assert st.client_stats == expected  # read twice: merged once, nothing lost or added
    assert merges == [players]
    assert st.reconnects == sum(range(players))


def test_players_that_stop_after_a_read_join_the_total_and_a_reset_forgets_them() -> None:
    st = State()
    assert st.client_stats is None
    a, b = _snapshot(1), _snapshot(2)
    st.add_client_stats(a)
    assert st.client_stats == a
    st.add_client_stats(b)
    assert st.client_stats == merge_snapshots(a, b)
    st.add_client_stats(a)
    st.reset()
    assert st.client_stats is None
