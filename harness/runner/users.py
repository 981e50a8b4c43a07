"""Locust users whose client is a dispatcher connection: one player per user.

``DispatcherUser`` (abstract) connects on start, records every request, intent and event, and fires
``environment.events.request`` for each, so Locust's own UI, CSV and HTML keep working: ``request_type`` is
the QoS tier in at most 8 characters to fit Locust's type column (``LOCUST_TYPES``: CRIT, HIGH, NORM,
BACKGRND), ``name`` the envelope name, with `` [intent]`` appended for intents so that the intents and the
requests of one name (``Intent.Skills.Use``) are separate rows; ``response_time`` in ms as a float.
What is measured:

* request: from the send's intended time to the response (open model: coordinated omission corrected);
* intent on a reliable channel: from the intended time to the server's acknowledgement (delivery);
  on another channel: from the intended time to the hand-off to the dispatcher;
* event: one-way, from the server's ``ts_sent`` to arrival, on the server's clock (``transport.clock_offset``:
  exactly 0 when both share one host's monotonic clock).  A negative sample is counted as ``clock_skew``,
  never clamped; ``--sample-log`` keeps it raw.

Delivery audit: every intent and request sent is counted (``sent``); a reliable intent never acknowledged or a
request never answered by the time the user stops (after ``LOST_GRACE`` seconds of waiting for them) is
``lost``, and fired to Locust as a failure.

``ScenarioUser`` plays a ``harness.runner.scenario.Scenario`` timeline; a send that starts more than the scenario's
``behind_after`` after its intended time (measured after the wait) is counted ``behind`` (sends that start
once Locust began stopping the users are not judged: the run's own shutdown held them up).
"""

from __future__ import annotations

import itertools
import random
import time
from time import monotonic as _monotonic
from typing import Any, ClassVar

import gevent
from gevent import GreenletExit
from locust import User, task

import dispatcher
from dispatcher import Envelope, Meta, QoS
from harness.game.schemas import SCHEMAS
from harness.runner import plugin  # noqa: F401  (Locust loads the harness's listeners with the users)
from harness.runner.recorder import Entry
from harness.runner.scenario import BEHIND_AFTER, Action, Scenario
from harness.runner.state import state

__all__ = ["INTENT_SUFFIX", "LOCUST_TYPES", "LOST_GRACE", "DispatcherUser", "LostError", "ReplayUser",
           "ScenarioUser", "locust_name"]

#: Locust's request_type per QoS tier: its console's type column is 8 characters wide.
LOCUST_TYPES = {"CRITICAL": "CRIT", "HIGH": "HIGH", "NORMAL": "NORM", "BACKGROUND": "BACKGRND"}
#: Appended to an intent's name in Locust's stats, so intents and requests of one name are separate rows.
INTENT_SUFFIX = " [intent]"


def locust_name(kind: str, name: str) -> str:
    """The row name in Locust's stats of ``(kind, name)``: requests and events keep their envelope name."""
    return name + INTENT_SUFFIX if kind == "intent" else name

#: An entry with its Locust names (request_type, name): what recording one sample needs.
Row = tuple[Entry, str, str]

_ids = itertools.count(1)
_requests = itertools.count(1)
#: Seconds a stopping user waits for its unacknowledged intents and unanswered requests before they are lost.
LOST_GRACE = 1.0


class LostError(Exception):
    """Work still pending when the run ended: a reliable intent never acknowledged, a request never answered."""


class DispatcherUser(User):
    abstract = True
    #: Players per worker process are numbered from worker_index * PLAYER_BLOCK + 1.
    PLAYER_BLOCK = 1_000_000

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.state = state(environment)
        self.player_id = self.assign_player_id()
        self.client: dispatcher.Transport | None = None
        self.stopping = False
        self._acks: dict[tuple[str, int], tuple[float, Row]] = {}  # reliable intents awaiting the ACK
        self._pending: dict[int, tuple[float, Row]] = {}  # requests awaiting their answer
        self._entries: dict[tuple[str, str, str], Entry] = {}
        # (kind, qos, name) -> (entry, Locust's request_type, Locust's name): computed once, not per sample
        self._rows: dict[tuple[str, str, str], Row] = {}
        self._asks: dict[tuple[str, str | None], Row] = {}  # request() by (name, qos)
        self._tiers: dict[str, tuple[str, bool]] = {}  # name -> (declared tier, reliable channel)
        self._fire_request = environment.events.request.fire

    def assign_player_id(self) -> int:
        index = getattr(self.environment.runner, "worker_index", 0) or 0
        return index * self.PLAYER_BLOCK + next(_ids)

    # -- connection ------------------------------------------------------------------------------

    def on_start(self) -> None:
        target = self.state.target(self.environment)
        try:
            self.client = dispatcher.init(
                peer="client", channel_registry=self.state.registry, connect=target.address,
                player_id=self.player_id, token=dispatcher.make_token(target.secret, self.player_id),
                schemas=SCHEMAS, mode="release", connect_timeout=10.0,
            )
        except dispatcher.DispatcherError as e:
            self.state.connect_failures += 1
            self._fire("CONNECT", "connect", 0.0, 0, e)
            raise
        self.state.playing += 1
        self.client.on_ack(self._on_ack)
        for name in self.state.registry.names:
            if name.startswith("Event."):
                self.client.bus.on(name, self._event_recorder(name))

    def on_stop(self) -> None:
        if self.client is not None:
            st = self.state
            st.playing -= 1
            st.draining += 1
            try:
                self._audit_lost()
            finally:
                st.draining -= 1
            # The rest (stats snapshots, closing) costs CPU with the event loop blocked: it waits until every
            # player of this process has stopped and has its answers, so that it does not delay theirs (their
            # latency would be the harness's own).  Players still playing count too: Locust stops a run's
            # players in turns, and those stopped first, done at once, blocked the loop for 0.1-0.9 s while
            # the others still played (a capacity step's last second read a p99 of 0.3-1 s).
            deadline = time.monotonic() + LOST_GRACE
            while (st.draining > 0 or st.playing > 0) and time.monotonic() < deadline:
                gevent.sleep(0.01)
        self.stopping = True  # what our own close cuts short is not a failure of the system under test
        if self.client is not None:
            c = self.client
            self.state.add_client_stats(c.stats().snapshot(), c.reconnects)
            self.state.add_clock(c.clock_domain, c.clock_offset, c.clock_error)
            self.client.close()
            self.client = None

    # -- recording -------------------------------------------------------------------------------

    def _entry(self, kind: str, qos: str, name: str) -> Entry:
        return self._row(kind, qos, name)[0]

    def _row(self, kind: str, qos: str, name: str) -> Row:
        key = (kind, qos, name)
        row = self._rows.get(key)
        if row is None:
            e = self._entries.get(key)
            if e is None:
                e = self._entries[key] = self.state.recorder.entry(kind, qos, name)
            row = self._rows[key] = (e, LOCUST_TYPES.get(qos, qos), locust_name(kind, name))
        return row

    def _fire(self, qos: str, name: str, ms: float, nbytes: int, exc: BaseException | None) -> None:
        self._fire_request(request_type=LOCUST_TYPES.get(qos, qos), name=name, response_time=ms,
                           response_length=nbytes, exception=exc, context={})

    def _ok(self, row: Row, latency: float, nbytes: int = 0) -> None:
        """One sample of ``row`` (an entry with its Locust names): recorded, logged raw, fired to Locust."""
        e, rtype, lname = row
        e.record(latency, nbytes)
        samples = self.state.samples
        if samples is not None:
            samples.append((*e.key, latency))
        self._fire_request(request_type=rtype, name=lname, response_time=latency * 1000.0, response_length=nbytes,
                           exception=None, context={})

    def _failed(self, e: Entry, latency: float, exc: BaseException) -> None:
        if self.stopping and isinstance(exc, dispatcher.ConnectionClosed):
            return
        self.state.recorder.fail(e)
        self._fire(e.key[1], locust_name(e.key[0], e.key[2]), latency * 1000.0, 0, exc)

    def _audit_lost(self) -> None:
        """Wait up to ``LOST_GRACE`` for what is still in flight; whatever is left is lost (a failure)."""
        deadline = time.monotonic() + LOST_GRACE
        while (self._acks or self._pending) and time.monotonic() < deadline:
            gevent.sleep(0.02)
        pending = [*self._acks.values(), *self._pending.values()]
        self._acks.clear()
        self._pending.clear()
        for intended, (e, _, _) in pending:
            self.state.recorder.fail(e, lost=True)
            what = "acknowledged" if e.key[0] == "intent" else "answered"
            self._fire(e.key[1], locust_name(e.key[0], e.key[2]), (time.monotonic() - intended) * 1000.0, 0,
                       LostError(f"lost: never {what} by the end of the run"))

    def _event_recorder(self, name: str) -> Any:
        """The bus subscriber recording ``name``'s events: the hot path of a player that many events reach
        (its row per tier is looked up by the tier's number, once computed)."""
        rows: list[Row | None] = [None] * len(QoS)

        def on_event(payload: Any, meta: Meta) -> None:
            client = self.client
            if client is None:
                return
            latency = _monotonic() + client.clock_offset - meta.ts_sent
            row = rows[meta.qos]
            if row is None:
                row = rows[meta.qos] = self._row("event", QoS(meta.qos).name, name)
            if latency >= 0:
                self._ok(row, latency)
                return
            row[0].skewed()  # counted, never clamped: the clock offset is off by more than this latency
            if self.state.samples is not None:
                self.state.samples.append((*row[0].key, latency))

        return on_event

    def _on_ack(self, env: Envelope, now: float) -> None:
        pending = self._acks.pop((env.name, env.meta.seq), None)
        if pending is not None:
            self._ok(pending[1], now - pending[0])

    # -- sending ---------------------------------------------------------------------------------

    def request(self, name: str, payload: Any = None, *, qos: str | None = None,
                timeout: float = 5.0) -> Envelope | None:
        """Send a request and wait for its answer (a closed loop, as Locust's ``HttpUser`` client does):
        recorded and reported to Locust like every request.  The answer, or None if it failed (the failure
        is recorded and reported, not raised).  The shortest path through the harness: one cached entry,
        one wait (the waiting greenlet reads the answer itself), one sample, one Locust event."""
        key = (name, qos)
        row = self._asks.get(key)
        if row is None:
            row = self._asks[key] = self._row("request", qos or self._tier(name), name)
        e = row[0]
        e.sent += 1
        client = self.client
        assert client is not None
        st = self.state
        t0 = _monotonic()
        try:
            p = client.request(name, payload, qos_override=qos, timeout=timeout)
        except dispatcher.DispatcherError as exc:
            self._failed(e, _monotonic() - t0, exc)
            return None
        if st.capture_buffer is not None:
            self._capture_request(name, payload, qos or self._tier(name))
        try:
            env = p.result()  # the request's own timeout settles it
        except dispatcher.DispatcherError as exc:
            self._failed(e, _monotonic() - t0, exc)
            return None
        except GreenletExit:  # the user is stopping: still in flight, so the lost audit judges it
            self._track(p, t0, row)
            raise
        self._ok(row, _monotonic() - t0)
        return env

    def send_intent(self, name: str, payload: Any, *, intended: float | None = None, qos: str | None = None) -> None:
        assert self.client is not None
        t0 = _monotonic()
        intended = t0 if intended is None else intended
        try:
            env = self.client.intent(name, payload, qos_override=qos)
        except dispatcher.DispatcherError as exc:
            e = self._entry("intent", qos or self._tier(name), name)
            e.sent += 1
            self._failed(e, _monotonic() - intended, exc)
            return
        if env is None:  # release mode dropped it: invalid payload
            e = self._entry("intent", qos or self._tier(name), name)
            e.sent += 1
            self._failed(e, 0.0, dispatcher.ValidationError(name, "rejected by its schema"))
            return
        row = self._row("intent", env.meta.qos.name, name)
        row[0].sent += 1
        if self.state.capture_buffer is not None:
            self.state.capture(self.player_id, env, "intent")
        if self._reliable(name):
            self._acks[(name, env.meta.seq)] = (intended, row)
        else:
            self._ok(row, _monotonic() - intended)

    def send_request(self, name: str, payload: Any, *, intended: float | None = None, qos: str | None = None,
                     timeout: float = 5.0) -> None:
        """Send a request without waiting (open model): its answer is recorded when it comes."""
        assert self.client is not None
        intended = _monotonic() if intended is None else intended
        tier = qos or self._tier(name)
        row = self._row("request", tier, name)
        row[0].sent += 1
        try:
            p = self.client.request(name, payload, qos_override=qos, timeout=timeout)
        except dispatcher.DispatcherError as exc:
            self._failed(row[0], _monotonic() - intended, exc)
            return
        if self.state.capture_buffer is not None:
            self._capture_request(name, payload, tier)
        self._track(p, intended, row)

    def _capture_request(self, name: str, payload: Any, tier: str) -> None:
        """With ``--capture`` (its callers check ``state.capture_buffer``, no call per request without it): the
        request as sent, for ``replay.py``."""
        self.state.capture(self.player_id, Envelope(name, payload, Meta(0, QoS[tier], _monotonic())), "request")

    def _track(self, p: dispatcher.Promise[Envelope], intended: float, row: Row) -> None:
        """Record ``p``'s answer or failure when it comes; pending until then (the lost audit's)."""
        rid = next(_requests)
        self._pending[rid] = (intended, row)

        def answered(env: Envelope) -> None:
            if self._pending.pop(rid, None) is not None:  # not already counted lost
                self._ok(row, _monotonic() - intended)

        def failed(exc: BaseException) -> None:
            if self._pending.pop(rid, None) is not None:
                self._failed(row[0], _monotonic() - intended, exc)

        p.and_then(answered).catch(failed)

    def _tier(self, name: str) -> str:
        return self._channel(name)[0]

    def _reliable(self, name: str) -> bool:
        return self._channel(name)[1]

    def _channel(self, name: str) -> tuple[str, bool]:
        got = self._tiers.get(name)
        if got is None:
            ch = self.state.registry.channel_of(name)
            got = self._tiers[name] = (ch.qos.name, bool(ch.reliable))
        return got

    def wait_until(self, intended: float, kind: str, qos: str | None, name: str, tolerance: float) -> None:
        """Sleep until ``intended``, then measure how late the send really starts (a sleep can overrun, a
        frozen process wakes up late): later than ``tolerance`` counts as behind schedule."""
        delay = intended - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
        actual = time.monotonic()
        stopping = self.state.stopping_at
        if stopping is not None and actual >= stopping:
            return  # held up by the run's own shutdown (users stopping), not by the load: not scheduled work
        late = actual - intended
        self.state.recorder.late(late)
        tier = qos or self._tier(name)
        if late > tolerance:
            self._entry(kind, tier, name).behind += 1
        if self.state.sends is not None:
            self.state.sends.append((kind, tier, name, intended, actual))


class ScenarioUser(DispatcherUser):
    """Plays ``scenario``'s timeline (phases of actions at rates, open-model pacing)."""

    abstract = True
    scenario: ClassVar[Scenario]

    def wait_time(self) -> float:
        return 0.0

    @task
    def play(self) -> None:
        params = self.state.params
        rng = random.Random(self.player_id)
        start = self.state.start_time(self.environment)
        joined = time.monotonic()
        for intended, _phase, action, n in self.scenario.timeline(params, rng, start):
            if intended < joined:
                continue  # the timeline is shared (phases line up across players); a late joiner skips the past
            self.wait_until(intended, action.kind, action.qos, action.name, self.scenario.behind_after)
            self.perform(action, rng, params, n, intended)
        while True:  # a timeline that ends: stay connected (events keep coming) until the run ends
            gevent.sleep(3600)

    def perform(self, action: Action, rng: random.Random, params: dict[str, Any], n: int, intended: float) -> None:
        payload = action.make_payload(rng, params, n)
        if action.kind == "request":
            self.send_request(action.name, payload, intended=intended, qos=action.qos, timeout=action.timeout)
        else:
            self.send_intent(action.name, payload, intended=intended, qos=action.qos)


class ReplayUser(DispatcherUser):
    """Replays one captured player's envelopes (``--replay-file``) with their original timing, as that
    player (``--time-scale`` > 1 plays faster).  A capture of another registry fails at start."""

    abstract = True

    def assign_player_id(self) -> int:
        pid = self.state.next_replay_player(self.environment)
        return pid if pid is not None else super().assign_player_id()

    def wait_time(self) -> float:
        return 0.0

    @task
    def replay(self) -> None:
        script = self.state.replay_script(self.environment, self.player_id)
        scale = float(getattr(self.environment.parsed_options, "time_scale", 1.0) or 1.0)
        t0 = self.state.start_time(self.environment) + 0.5
        for entry in script:
            intended = t0 + entry.t / scale
            env = entry.envelope
            self.wait_until(intended, entry.kind if entry.kind == "request" else "intent", env.meta.qos.name,
                            env.name, BEHIND_AFTER)
            if entry.kind == "request":
                self.send_request(env.name, env.payload, intended=intended, qos=env.meta.qos.name)
            else:
                self.send_intent(env.name, env.payload, intended=intended, qos=env.meta.qos.name)
        while True:
            gevent.sleep(3600)
