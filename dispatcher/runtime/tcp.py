"""The TCP runtime: the core on real gevent sockets.

Cooperative all the way: it uses gevent's sockets, events and greenlets directly, so it runs inside Locust
(monkey-patched) and in plain scripts alike; a blocking ``promise.result()`` yields to the other greenlets
(a ``gevent.hub.Waiter``; its deadline is a core timer, not a gevent ``Timeout``).  On a server, one
reader greenlet per connection feeds the core (``tcpconn``); on a client, a greenlet blocked in
``result()`` reads its own answer and the reader greenlet reads only while nobody waits
(``tcpclientconn``).  Whoever flushes writes the core's bytes directly (non-blocking; a server once per
turn of its event loop, so one turn's envelopes to a player leave in one ``send``), and a writer
greenlet exists only while the socket's buffer is full; one timer greenlet per transport drives
``handle_timer``.  A client whose connection drops reconnects with jittered exponential backoff and
resumes its session; a server keeps a lost player's session for the core's ``resume_grace``.
"""

from __future__ import annotations

from .tcpclient import TcpClientRuntime
from .tcpserver import TcpServerRuntime

__all__ = ["TcpClientRuntime", "TcpServerRuntime"]
