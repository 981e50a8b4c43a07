"""The receive path: every inbound frame passes one pipeline of named steps.

1. **admit by state**: the decoder refuses a frame type the connection's state does not admit
   (``connection.ADMITS``) as soon as it reads the type;
2. **decode within limits**: the decoder (frame size, pre-auth size, CHUNK budget, field types);
3. **authorise**: direction (``_authorise_direction``), declared tier (``_authorise_tier``: a claimed tier
   more urgent than the channel's is clamped and counted), budget (the server role's ``charge``, refused by
   ``_refuse_budget``: the per-channel rate limit, which retransmissions pay too);
4. **sequence window** (``_sequence``: replays dropped, retried requests answered from the cache at most
   once per resend interval);
5. **validate** (``_schema_reason``: the compiled schema test, the validator when it says no; ``_invalid``);
6. **deliver** (``_deliver``: replay buffer, bus, logger, handlers; a request's answer).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Final

from .base import SERVER_PEER, Handler
from .connection import Connection, NameInfo, State
from .envelope import Envelope, Flags, Meta, envelope_of
from .errors import LocalProtocolError, RemoteError, RemoteProtocolError, ValidationError
from .promise import Promise
from .sending import Sender
from .sequence import DUPLICATE, IN_ORDER, LATE
from .stats import NameStats
from .text import escape
from .timers import Timers
from .wire import (
    Ack,
    Bits,
    Challenge,
    Close,
    Frame,
    Hello,
    Nack,
    Ping,
    Pong,
    Welcome,
    encode_control,
    encode_tailed,
    frame_tail,
    record_envelope,
)

__all__ = ["Receiver"]

# Module constants are ``Final``: compiled, each is a C static (or inlined), not a globals-dict lookup per use.
_NO_FLAGS: Final = Flags.of()
_envelope_of: Final = envelope_of
_RESPONSE: Final = Bits.RESPONSE
#: The latency tallies fold into their histograms at the first input, then every this many frames or seconds:
#: histograms take their memory as a run starts (by count alone, slow players grew 7 MB a minute in), and a
#: tally's carries (a bucket index per 256 of its values) stay a short list between folds.
_FOLD_EVERY: Final = 4096
_FOLD_INTERVAL: Final = 1.0
_ACK_REQUESTED: Final = Bits.ACK_REQUESTED

_HANDSHAKE: Final = (Challenge, Hello, Welcome)


class Receiver(Sender):
    def receive_data(self, data: bytes, now: float, peer: Hashable = SERVER_PEER) -> None:
        """Feed bytes from ``peer``.  ``RemoteProtocolError`` means the connection must be closed after
        flushing ``data_to_send`` (it carries the CLOSE frame telling the peer why)."""
        c = self._sessions.get(peer)
        if c is None or c.closed or c.state == State.DETACHED:
            return
        self.stats.count("bytes_in", len(data))
        n = 0
        dec = c.decoder
        try:
            dec.receive(data)
            for fr in dec.frames(True):
                n += 1
                if type(fr) is list:  # an envelope's compact record
                    self._on_envelope(c, fr, now)
                else:
                    c = self._frame(c, fr, now)  # type: ignore[arg-type]
                if c.closed:
                    break
        except RemoteProtocolError as e:
            if e is dec.failure:
                self.stats.count("not_admitted" if e.code == "not_admitted" else
                                 "oversized_frames" if dec.oversized else "malformed_frames")
            self._protocol_failure(c, e, now)
            raise
        finally:
            self._received(c, n, now)

    def _received(self, c: Connection, n: int, now: float) -> None:
        if self._one_way_due.n:
            self._count_one_way(now)
        st = self.stats
        st.count("frames_in", n)
        self._unfolded += n
        if self._unfolded >= _FOLD_EVERY or now >= self._fold_at:  # counts wait in tallies (``bind_latency``)
            self._unfolded = 0
            self._fold_at = now + _FOLD_INTERVAL
            st.fold_latency()
        if c.decoder.spoofed:
            st.count("spoofed_player_id", c.decoder.spoofed)
            c.decoder.spoofed = 0
        if c.closed:
            return
        if n:
            c.last_heard = now
        if not c.decoder.buffered:
            c.partial_since = None
        elif n or c.partial_since is None:
            c.partial_since = now  # a frame started since the last one completed
        if c.acks:
            for chan, seqs in c.acks.items():
                self._push(c, encode_control(Ack(chan, seqs)), 0, now)
            c.acks = {}

    def _frame(self, c: Connection, fr: Frame, now: float) -> Connection:
        t = type(fr)
        if t in _HANDSHAKE:
            return self.impl.handshake(c, fr, now)
        elif t is Ping:
            if c.pings.take(now):
                self._push(c, encode_control(Pong(fr.ts, now)), 0, now)  # type: ignore[union-attr]
            else:
                self.stats.count("pings_dropped")
        elif t is Pong:
            if self._one_way_due.n:  # the events before it on the offset they were sent under
                self._count_one_way(now)
            self.clock.sample(fr.echo, fr.ts, now)  # type: ignore[union-attr]
        elif t is Ack:
            self._on_ack(c, fr, now)  # type: ignore[arg-type]
        elif t is Nack:
            self._on_nack(c, fr, now)  # type: ignore[arg-type]
        elif t is Close:
            code, message = escape(fr.code, 40), escape(fr.message)  # type: ignore[union-attr]
            if c.log.allow(now):
                self._log_info("%s closed the connection: %s: %s", escape(str(c.key), 80), code, message)
            self._end(c, code, message)
        return c

    @staticmethod
    def _log_info(fmt: str, *args: Any) -> None:
        from .base import log

        log.info(fmt, *args)

    # -- control frames --------------------------------------------------------------------------------

    def _on_ack(self, c: Connection, fr: Ack, now: float) -> None:
        if not 0 <= fr.chan < len(self._channel_qos):
            raise RemoteProtocolError(f"ACK for unknown channel {fr.chan}", code="malformed_frame")
        listeners = self._ack_listeners
        unacked, chan = c.unacked, fr.chan
        for seq in fr.seqs:
            key = c.seq_key(chan, seq)
            entry = unacked.get(key)  # get and del: compiled primitives (``pop`` is a generic method call)
            if entry is not None:
                del unacked[key]
                for listener in listeners:
                    listener(entry[0], now)

    def _on_nack(self, c: Connection, fr: Nack, now: float) -> None:
        if not 0 <= fr.wire_id < len(self.registry.names):
            raise RemoteProtocolError(f"NACK for unknown wire id {fr.wire_id}", code="malformed_frame")
        info = self._info[self.registry.name_of(fr.wire_id)]
        code, message = escape(fr.code, 40), escape(fr.message, self.limits.reason_chars)
        pend = c.pending.pop(c.seq_key(info.chan, fr.reply_to), None)
        st = self.stats[info.name]
        if pend is not None:
            Timers.cancel(pend.timer)
            st.failures += 1
            if code == "no_subscriber":
                st.no_subscriber += 1
            pend.promise.reject(RemoteError(info.name, code, message))
        elif code == "no_subscriber":
            st.no_subscriber += 1
            self._warn(c, now, "%s: the %s has no subscriber (require_subscriber): %s", info.name, self.impl.peer,
                       message)
        else:
            self._warn(c, now, "%s: peer refused seq %d: %s: %s", info.name, fr.reply_to, code, message)

    # -- the envelope pipeline -------------------------------------------------------------------------

    def _on_envelope(self, c: Connection, r: list[Any], now: float) -> None:
        """One envelope's record (``FrameDecoder._record``: ``[size, wire_id, seq, qos, bits, ts_sent, payload,
        player_id, trace_id, reply_to, ts_ack]``) through the pipeline."""
        wid: int = r[1]  # typed locals (the decoder checked the record): native ints, typed lookups
        seq: int = r[2]
        bits: int = r[4]
        tier: int = r[3]
        info = self._by_wire[wid]
        st = self._ns[wid]
        # Each step's common case is tested inline; the step's method handles the rest (and says why).
        if not self._accepts[wid][bits & _RESPONSE]:  # the role's ``expects``, tabulated per wire id
            self._authorise_direction(c, info, st, record_envelope(r, info.name).meta, bits, now)
            return
        chan = info.chan
        if tier < self._channel_qos[chan]:
            self._authorise_tier(info, r)
        if bits & _ACK_REQUESTED:  # acknowledged whatever happens next: the sender must stop re-sending
            acks = c.acks.get(chan)
            if acks is None:
                c.acks[chan] = [seq]
            else:
                acks.append(seq)
        charges = self._charges
        if charges is not None and not charges(c, info, now):
            self._refuse_budget(c, info, seq, bits, now)
            return
        window = c.windows[chan]
        if seq == window.highest + 1:  # in order (ReceiveWindow.check's first case)
            window.highest = seq
            window.gap = 0
        elif not self._sequence(c, info, st, seq, bits, now):
            return
        st.received += 1
        size: int = r[0]
        st.bytes_in += size
        if bits & _RESPONSE:
            self._on_response(c, info, st, r, now)
            return
        reason = self._schema_reason(info.name, r[6])
        if reason is not None:
            self._invalid(c, info, st, r, bits, reason, now)
            return
        self._deliver(c, info, st, r, bits, now)

    def _authorise_direction(self, c: Connection, info: NameInfo, st: NameStats, meta: Meta, bits: int,
                             now: float) -> bool:
        if self.impl.expects(info, meta):
            return True
        st.wrong_direction += 1
        self.stats.drop(info.name, "wrong_direction")
        self._warn(c, now, "%s sent %s %s, which travels the other way; dropped", escape(str(c.key), 80),
                   "a response to" if meta.is_response else "the " + info.kind, info.name)
        if bits & Bits.REQUEST:
            self._nack(c, info, meta.seq, "wrong_direction",
                       f"{info.name} is an {info.kind}; a {self.role} does not accept it", now)
        return False

    def _authorise_tier(self, info: NameInfo, r: list[Any]) -> None:
        """A claimed tier more urgent than the channel's is clamped to it (in the record) and counted."""
        declared = self._channel_qos[info.chan]
        if r[3] < declared:
            self.stats.count("qos_clamped")
            r[3] = declared

    def _refuse_budget(self, c: Connection, info: NameInfo, seq: int, bits: int, now: float) -> None:
        self.stats.count("rate_limited")
        self.stats.drop(info.name, "rate_limited")
        if bits & Bits.REQUEST:
            self._nack(c, info, seq, "rate_limited",
                       f"more than {self._rates[info.chan]:g} envelopes/s on channel {info.channel.name}", now)

    def _sequence(self, c: Connection, info: NameInfo, st: NameStats, seq: int, bits: int, now: float) -> bool:
        window = c.windows[info.chan]
        verdict = window.check(seq)
        if verdict == IN_ORDER:
            if window.gap:
                st.seq_gaps += window.gap
            return True
        if verdict == LATE:
            st.seq_late += 1
            return True
        if not bits & Bits.RETRANSMIT:
            st.seq_regressions += 1
            self.stats.drop(info.name, "seq_regression" if verdict != DUPLICATE else "duplicate")
            return False
        st.duplicates += 1
        if bits & Bits.REQUEST:
            key = (info.chan, seq)
            cached = c.answered.get(key)
            tier = self._declared(info)
            if cached is not None:
                if c.answered.may_resend(key, now, self.limits.answer_resend_interval) and not c.out.full(tier):
                    self._push(c, cached, tier, now, droppable=False)
                else:
                    self.stats.count("answer_resends_dropped")
            elif c.answered.evicted(key):  # it ran; its answer is gone: refuse, never run it twice
                self._nack(c, info, seq, "expired",
                           f"request {seq} already ran and its answer is no longer kept", now)
        return False

    def _invalid(self, c: Connection, info: NameInfo, st: NameStats, r: list[Any], bits: int, reason: str,
                 now: float) -> None:
        reason = escape(reason, self.limits.reason_chars)
        st.validation_errors += 1
        self.stats.drop(info.name, "invalid_payload")
        self._warn(c, now, "%s sent an invalid %s: %s", escape(str(c.key), 80), info.name, reason)
        if bits & Bits.REQUEST:
            self._nack(c, info, r[2], "invalid_payload", reason, now)

    def _deliver(self, c: Connection, info: NameInfo, st: NameStats, r: list[Any], bits: int, now: float) -> None:
        name = info.name
        if self._one_way:  # a client with stats on: the event's one-way latency, counted at the read's end
            self._one_way_due.push(r[5], info.wire_id, r[3])
        handlers = self._handler_table.get(name, ())
        subscribers = self._bus_table.get(name)
        # The Envelope is built only for someone who looks at it.
        if not (handlers or subscribers or self.replay_buffer is not None or self.logger is not None):
            if bits & Bits.REQUEST:
                self._serve_request(c, info, record_envelope(r, name), handlers, now)
                return
            st.no_subscriber += 1
            if bits & Bits.REQUIRE_SUBSCRIBER:
                self._nack(c, info, r[2], "no_subscriber", f"no handler for {name} on the {self.role}", now)
            return
        env = record_envelope(r, name)
        if self.replay_buffer is not None:
            self.replay_buffer.push(env, "in", now)
        if subscribers:
            self.bus.emit(name, env.payload, env.meta)
        if self.logger is not None:
            self._log(env, "in")
        if bits & Bits.REQUEST:
            self._serve_request(c, info, env, handlers, now)
            return
        if not handlers:
            st.no_subscriber += 1
            if bits & Bits.REQUIRE_SUBSCRIBER:
                self._nack(c, info, r[2], "no_subscriber", f"no handler for {name} on the {self.role}", now)
            return
        for h in handlers:
            try:
                h(env)
            except Exception as e:
                st.handler_errors += 1
                self._warn(c, now, "handler for %s raised %s: %s", name, type(e).__name__, escape(str(e)))

    # -- requests served here, responses to ours -------------------------------------------------------

    def _serve_request(self, c: Connection, info: NameInfo, env: Envelope, handlers: tuple[Handler, ...],
                       now: float) -> None:
        name = info.name
        key = (info.chan, env.meta.seq)
        tier = self._declared(info)
        if c.out.full(tier):  # admission control: its answer could only wait behind a full queue
            self.stats.drop(name, "overloaded")
            self._nack(c, info, env.meta.seq, "overloaded",
                       f"the {tier.name} queue to this player is full; try again later", now)
            return
        c.answered.start(key)
        if not handlers:
            self._ns[info.wire_id].no_subscriber += 1
            self._nack(c, info, env.meta.seq, "no_subscriber", f"no handler for {name} on the {self.role}", now, key)
            return
        result: Any = None
        try:
            for h in handlers:
                r = h(env)
                if result is None:
                    result = r
        except Exception as e:
            self._ns[info.wire_id].handler_errors += 1
            self._warn(c, now, "handler for %s raised %s: %s", name, type(e).__name__, escape(str(e)))
            self._nack(c, info, env.meta.seq, "handler_error", f"{type(e).__name__}: {e}", now, key)
            return
        if isinstance(result, Promise):  # answered later: its frames are stamped with the request's time
            result.and_then(lambda v: self._respond(c, info, env, v, now)).catch(
                lambda e: self._handler_failed(c, info, env, e, now))
        else:
            self._respond(c, info, env, result, now)

    def _handler_failed(self, c: Connection, info: NameInfo, req: Envelope, e: BaseException, now: float) -> None:
        self.stats[info.name].handler_errors += 1
        self._nack(c, info, req.meta.seq, "handler_error", f"{type(e).__name__}: {e}", now, (info.chan, req.meta.seq))

    def _respond(self, c: Connection, info: NameInfo, req: Envelope, payload: Any, now: float) -> None:
        if c.closed:
            return
        name = info.name
        m = req.meta
        key = (info.chan, m.seq)
        reason = self._schema_reason(name, payload, info.response_key)
        if reason is not None:
            self._ns[info.wire_id].validation_errors += 1
            self._nack(c, info, m.seq, "handler_error", f"the response is invalid: {reason}", now, key)
            return
        seq = c.seq[info.chan] + 1
        tier = self._declared(info)
        try:  # the frame from the values at hand; the ``Envelope`` only for a replay buffer or logger
            frame = encode_tailed(info.wire_id, seq, tier, Bits.RESPONSE, now, payload,
                                  frame_tail(c.player_id, m.trace_id, m.seq, now))
        except LocalProtocolError as e:
            self._nack(c, info, m.seq, "handler_error", f"the response cannot be sent: {e}", now, key)
            return
        c.seq[info.chan] = seq
        c.answered.store(key, frame)
        env = (_envelope_of(name, payload, seq, tier, now, now, c.player_id, m.trace_id, _NO_FLAGS, True, m.seq)
               if self.replay_buffer is not None or self.logger is not None else None)
        self._send(c, info, env, frame, now, None, False, tier)  # not droppable: someone is waiting for it

    def _on_response(self, c: Connection, info: NameInfo, st: NameStats, r: list[Any], now: float) -> None:
        reply_to: int = r[9] or 0
        key = c.seq_key(info.chan, reply_to)
        pend = c.pending.get(key)
        if pend is None:
            st.late_responses += 1
            return
        del c.pending[key]
        Timers.cancel(pend.timer)
        if self._timed:
            self._lat[info.wire_id][pend.tier].add(now - pend.first_sent)
        reason = self._schema_reason(info.name, r[6], info.response_key)
        if reason is not None:
            st.validation_errors += 1
            st.failures += 1
            pend.promise.reject(ValidationError(info.name + " response", escape(reason, self.limits.reason_chars)))
            return
        env = record_envelope(r, info.name)
        if self.replay_buffer is not None:
            self.replay_buffer.push(env, "in", now)
        self.bus.emit(info.name, env.payload, env.meta)
        if self.logger is not None:
            self._log(env, "in")
        pend.promise.resolve(env)
