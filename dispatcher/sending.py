"""The send path: the seed's API (``on``, ``intent``, ``request``, ``emit``, ``replay``), request timeouts
and retries, and the re-send of unacknowledged envelopes after a reconnect."""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import replace
from typing import Any, Final

from .base import SERVER_PEER, CoreBase, Handler, log
from .bus import Subscription
from .connection import Connection, NameInfo, PendingRequest
from .envelope import Envelope, Flags, QoS, envelope_of
from .errors import LocalProtocolError, RequestTimeout, ValidationError
from .promise import Promise, Waiter
from .qosconfig import CRITICAL
from .registry import Kind
from .wire import Bits, encode_envelope, encode_packed, encode_plain, flags_bits, frame_tail, pack_payload

__all__ = ["Sender"]

# ``Final``: compiled, a C static instead of a globals-dict lookup per use (``envelope_of`` lives in an
# interpreted module, so its name would otherwise be looked up at every call).
_NO_FLAGS: Final = Flags.of()
_envelope_of: Final = envelope_of


def _request_timed_out(arg: tuple[Sender, Connection, PendingRequest], now: float) -> None:
    """A request's timer: a module function, so that arming it makes no bound method."""
    arg[0]._on_request_timeout((arg[1], arg[2]), now)


class Sender(CoreBase):
    def on(self, name: str, handler: Handler) -> Subscription:
        """Handle envelopes named ``name`` that arrive here.  On a server, a handler's return value
        (or a Promise of it) answers a request; the first non-None value among the handlers wins."""
        info = self._known(name)
        incoming = self.impl.incoming
        if info.kind != incoming:
            raise LocalProtocolError(
                f"{name!r} is an {info.kind}: {info.kind}s travel "
                f"{'client -> server' if info.kind == 'intent' else 'server -> client'}, "
                f"so a {self.role} never receives one; a {self.role} can subscribe to {incoming}s"
            )
        return self.handlers.add(name, handler)

    def intent(self, name: str, payload: Any, now: float, *, qos_override: str | int | QoS | None = None,
               trace_id: str | None = None, require_subscriber: bool | None = None,
               reliable: bool | None = None, replayable: bool | None = None,
               coalesce_key: Hashable = None) -> Envelope | None:
        """Fire-and-forget.  Returns the envelope sent (None when release mode dropped an invalid one).

        ``coalesce_key``: while the link is saturated, a queued envelope of the same name and key is
        replaced by this one (names the registry lists under ``coalesce`` coalesce by name alone)."""
        info = self._sendable.get(name)
        if info is None or info.kind != "intent":
            info = self._outgoing(name, "intent")  # raises, saying why
        c = self._sessions.get(SERVER_PEER)
        if c is None or c.closed:
            c = self._client_session()  # raises, saying why
        if self._refused_out(name, payload) is not None:
            return None
        chan = info.chan
        qos = self._channel_qos[chan] if qos_override is None else self._tier(info, qos_override)
        bits = Bits.REQUIRE_SUBSCRIBER if (self.require_subscriber if require_subscriber is None
                                           else require_subscriber) else 0
        flags = _NO_FLAGS if replayable is None and reliable is None else Flags.of(replayable, reliable)
        seq = c.seq[chan] + 1
        c.seq[chan] = seq
        env = _envelope_of(name, payload, seq, qos, now, None, None, trace_id, flags)
        is_reliable = self._reliable[chan] if reliable is None else reliable
        if is_reliable:
            c.unacked[c.seq_key(chan, seq)] = (env, info)
            bits |= Bits.ACK_REQUESTED
        # No flags, no trace: the frame from the values at hand (``encode_envelope`` reads them back from ``env``).
        frame = (encode_plain(info.wire_id, seq, qos, bits, now, payload) if flags is _NO_FLAGS and trace_id is None
                 else encode_envelope(env, info.wire_id, bits))
        self._send(c, info, env, frame, now, coalesce_key, not is_reliable, qos)
        return env

    def request(self, name: str, payload: Any, now: float, *, timeout: float | None = None,
                retries: int | None = None, qos_override: str | int | QoS | None = None,
                trace_id: str | None = None, waiter: Waiter | None = None) -> Promise[Envelope]:
        """Send a request; the promise resolves with the response envelope or rejects with
        ``RequestTimeout`` (after ``1 + retries`` attempts), ``RemoteError``, ``ValidationError`` or
        ``ConnectionClosed``.  Retries wait an exponential backoff with jitter; CRITICAL defaults to 1."""
        info = self._outgoing(name, "intent")
        c = self._client_session()
        p: Promise[Envelope] = Promise(waiter)
        timeout = self.request_timeout if timeout is None else timeout
        if timeout <= 0:
            raise LocalProtocolError(f"{name}: timeout must be > 0 seconds, got {timeout}")
        qos = self._tier(info, qos_override)
        if retries is None:
            retries = 1 if qos == CRITICAL else 0  # the Final int: ``QoS.CRITICAL`` is a getattr on the enum
        elif retries < 0:
            raise LocalProtocolError(f"{name}: retries must be >= 0, got {retries}")
        reason = self._refused_out(name, payload)
        if reason is not None:
            p.reject(ValidationError(name, reason))
            return p
        seq = c.seq[info.chan] + 1
        c.seq[info.chan] = seq
        # The request's Envelope only for someone who looks at it (its frame is encoded from the values).
        env = (None if trace_id is None and self.replay_buffer is None and self.logger is None
               else _envelope_of(name, payload, seq, qos, now, None, None, trace_id))
        frame = (encode_plain(info.wire_id, seq, qos, Bits.REQUEST, now, payload) if env is None
                 else encode_envelope(env, info.wire_id, Bits.REQUEST))
        pend = PendingRequest(info, env, frame, p, retries, timeout, now, qos, payload, seq, trace_id)
        c.pending[c.seq_key(info.chan, seq)] = pend
        pend.timer = self._schedule(now + timeout, _request_timed_out, (self, c, pend))
        self._send(c, info, env, frame, now, qos=qos)
        return p

    def emit(self, name: str, payload: Any, now: float, *, to: int | Iterable[int] | None = None,
             qos_override: str | int | QoS | None = None, trace_id: str | None = None,
             player_id: int | None = None, reliable: bool | None = None,
             replayable: bool | None = None, coalesce_key: Hashable = None) -> list[Envelope]:
        """Server: send an event to one player, a list of players, or (``to=None``) every player.

        ``player_id`` is the origin player stamped in the meta (e.g. the caster of a skill).  Returns the
        envelopes sent, one per recipient; a recipient that is not connected is skipped and counted.
        """
        info = self._outgoing(name, "event")
        if self._refused_out(name, payload) is not None:
            return []
        if to is None:
            targets: list[Connection] = list(self._players.values())
        else:
            ids = [to] if isinstance(to, int) else list(to)
            targets = []
            for pid in ids:
                c = self._players.get(pid)
                if c is None:
                    self.stats.drop(name, "not_connected")
                else:
                    targets.append(c)
        qos = self._tier(info, qos_override)
        flags = _NO_FLAGS if replayable is None and reliable is None else Flags.of(replayable, reliable)
        body = pack_payload(payload)
        is_reliable = self._reliable[info.chan] if reliable is None else reliable
        bits = (Bits.ACK_REQUESTED if is_reliable else 0) | flags_bits(flags)
        tail = frame_tail(player_id, trace_id)
        chan, wid, tier = info.chan, info.wire_id, int(qos)
        sent = []
        for c in targets:
            seq = c.seq[chan] + 1
            c.seq[chan] = seq
            env = _envelope_of(name, payload, seq, qos, now, None, player_id, trace_id, flags)
            if is_reliable:
                c.unacked[c.seq_key(chan, seq)] = (env, info)
            self._send(c, info, env, encode_packed(wid, seq, tier, bits, now, body, tail), now, coalesce_key,
                       not is_reliable, tier)
            sent.append(env)
        return sent

    def replay(self, channel: str | None, now: float, *, since: float | None = None) -> int:
        """Re-inject the buffered incoming envelopes of ``channel`` (None: all) received at or after
        ``since`` into the local handlers and bus, oldest first, marked ``meta.replayed``.  A replayed request
        runs its handlers; their answer goes nowhere.  Returns how many were replayed."""
        if self.replay_buffer is None:
            raise LocalProtocolError(self.replay_off_message())
        if channel is not None and channel not in self.registry.channels:
            raise LocalProtocolError(
                f"no channel {channel!r} in the registry; channels: {', '.join(self.registry.channels)}")
        n = 0
        for entry in self.replay_buffer.entries(channel, since=since, direction="in"):
            env = entry.envelope
            if env.meta.is_response:
                continue
            env = replace(env, meta=replace(env.meta, replayed=True))
            self.bus.emit(env.name, env.payload, env.meta)
            for h in self.handlers.get(env.name):
                try:
                    h(env)
                except Exception as e:
                    self.stats[env.name].handler_errors += 1
                    log.exception("handler for %s raised on replay: %s", env.name, e)
            n += 1
        return n

    def replay_off_message(self) -> str:
        return (f"replay is off on this {self.role}: its config has replay.enabled=False.  Pass "
                "replay={'enabled': True} to init(...), to loopback(...) (both peers), or to this side only "
                f"with loopback({self.role}={{'replay': {{'enabled': True}}}})")

    # -- retries and re-sends --------------------------------------------------------------------------

    def _on_request_timeout(self, arg: tuple[Connection, PendingRequest], now: float) -> None:
        c, pend = arg
        key = c.seq_key(pend.info.chan, pend.seq)
        if c.pending.get(key) is not pend:
            return
        st = self.stats[pend.info.name]
        if pend.retries_left > 0:
            pend.retries_left -= 1
            backoff = min(self.retry_backoff_max, self.retry_backoff * 2 ** (pend.attempts - 1))
            pend.timer = self._schedule(now + backoff * self.rng.uniform(0.5, 1.5), self._retransmit, arg)
            return
        del c.pending[key]
        st.timeouts += 1
        st.failures += 1
        pend.promise.reject(RequestTimeout(pend.info.name, pend.attempts, pend.timeout))

    def _retransmit(self, arg: tuple[Connection, PendingRequest], now: float) -> None:
        c, pend = arg
        if c.closed or c.pending.get(c.seq_key(pend.info.chan, pend.seq)) is not pend:
            return
        pend.attempts += 1
        self.stats[pend.info.name].retries += 1
        frame = encode_envelope(pend.envelope(), pend.info.wire_id, Bits.REQUEST | Bits.RETRANSMIT)
        self._push(c, frame, pend.tier, now)
        pend.timer = self._schedule(now + pend.timeout, _request_timed_out, (self, c, pend))

    def _resend(self, c: Connection, now: float) -> None:
        """After a reconnect: every unacknowledged reliable envelope and pending request, again."""
        for env, info in sorted(c.unacked.values(), key=lambda e: e[0].meta.seq):
            self._push(c, encode_envelope(env, info.wire_id, Bits.ACK_REQUESTED | Bits.RETRANSMIT), env.meta.qos,
                       now, info.name, droppable=False)
        for pend in c.pending.values():
            self._push(c, encode_envelope(pend.envelope(), pend.info.wire_id, Bits.REQUEST | Bits.RETRANSMIT),
                       pend.tier, now, pend.info.name, droppable=False)

    # -- checks ----------------------------------------------------------------------------------------

    def _outgoing(self, name: str, kind: Kind) -> NameInfo:
        info = self._known(name)
        if info.kind != kind:
            how = "intents are sent by clients (intent/request)" if info.kind == "intent" else (
                "events are emitted by the server (emit)")
            raise LocalProtocolError(f"{name!r} is an {info.kind}, not an {kind}: {how}")
        if self.impl.incoming == kind:
            raise LocalProtocolError(
                f"a {self.role} cannot send {name!r}: {kind}s travel "
                f"{'client -> server' if kind == 'intent' else 'server -> client'} "
                f"(channel {info.channel.name!r} is {info.channel.direction.value})"
            )
        return info

    def _client_session(self) -> Connection:
        c = self._sessions.get(SERVER_PEER)
        if c is None or c.closed:
            why = f" ({c.close_code}: {c.close_message})" if c is not None else ""
            raise LocalProtocolError(f"not connected: the transport is closed{why}")
        return c  # while DETACHED or AWAITING_AUTH, sends queue up behind the handshake

    def _refused_out(self, name: str, payload: Any) -> str | None:
        """Why an outgoing payload is invalid, or None: dev mode raises it, release mode counts and drops it."""
        reason = self._schema_reason(name, payload)
        if reason is None:
            return None
        if self.mode == "dev":
            raise ValidationError(name, reason)
        st = self.stats[name]
        st.validation_errors += 1
        self.stats.drop(name, "invalid_payload")
        return reason

    def _tier(self, info: NameInfo, override: str | int | QoS | None) -> QoS:
        declared = self._channel_qos[info.chan]
        if override is None:
            return declared
        try:
            qos = QoS.parse(override)
        except ValueError as e:
            raise LocalProtocolError(f"{info.name}: qos_override: {e}") from None
        if qos < declared:  # more urgent than the channel declares
            self.stats[info.name].qos_deviations += 1
            if info.name not in self._warned:
                self._warned.add(info.name)
                log.warning("%s: qos_override %s is above channel %s's declared tier %s (policy %s)",
                            info.name, qos.name, info.channel.name, declared.name, self.qos_policy)
            if self.qos_policy == "clamp":
                return declared
        return qos
