"""netharness replay: look into, export and import replay captures.

    netharness replay inspect CAPTURE [--json]
    netharness replay export CAPTURE [-o OUT.jsonl] [--force]
    netharness replay import IN.jsonl -o CAPTURE [--force]

A capture is the versioned msgpack file of dispatcher/replay.py: a Locust run's --capture, netharness
serve --capture, or ReplayBuffer.dump(path).

inspect prints the capture's registry hash and time span, and one table per channel and per player
(envelopes, directions, names, span).

export writes JSON lines: first a header (the file's format, version, registry hash, buffer size), then
one object per envelope with named fields (t, direction, name, payload, seq, qos, ts_sent, ts_ack,
player_id, trace_id, replayable, reliable, is_response, reply_to, kind).  Values JSON cannot hold are
tagged objects: {"$bytes": BASE64}, {"$map": [[KEY, VALUE], ...]} (a map whose keys are not all strings),
{"$float": "nan" | "nan:16 HEX DIGITS" (a NaN's exact bits) | "inf" | "-inf"},
{"$ext": [CODE, BASE64]}, {"$timestamp": [SECONDS, NANOSECONDS]}.

import reads such JSON lines back into a capture; export then import gives back the same bytes.
"""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import msgpack

from dispatcher.envelope import QoS
from dispatcher.replay import FORMAT, VERSION, ReplayFileError, read_entries
from dispatcher.stats import text_table
from harness.args import CliError, Parser, fail

__all__ = ["FIELDS", "decode_value", "encode_value", "export_lines", "import_lines", "inspect", "main"]

#: The fields of a capture row, in the file's order (dispatcher/replay.py ``_entry_row``).
FIELDS = ("t", "direction", "name", "payload", "seq", "qos", "ts_sent", "ts_ack", "player_id", "trace_id",
          "replayable", "reliable", "is_response", "reply_to", "kind")
_NAN = struct.pack(">d", float("nan"))
_TAGS = ("$bytes", "$map", "$float", "$ext", "$timestamp")


# -- values -----------------------------------------------------------------------------------------


def encode_value(v: Any) -> Any:
    """A msgpack-decoded value as JSON, exactly: what JSON cannot hold becomes a tagged object."""
    if v is None or isinstance(v, bool | int | str):
        return v
    if isinstance(v, float):
        if math.isfinite(v):
            return v
        if v != v and struct.pack(">d", v) != _NAN:  # a NaN with other bits (sign, payload): keep them exactly
            return {"$float": "nan:" + struct.pack(">d", v).hex()}
        return {"$float": repr(v)}
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode("ascii")}
    if isinstance(v, msgpack.ExtType):  # a namedtuple: before tuples
        return {"$ext": [v.code, base64.b64encode(v.data).decode("ascii")]}
    if isinstance(v, msgpack.Timestamp):
        return {"$timestamp": [v.seconds, v.nanoseconds]}
    if isinstance(v, list | tuple):
        return [encode_value(x) for x in v]
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v) and not (len(v) == 1 and next(iter(v)) in _TAGS):
            return {k: encode_value(x) for k, x in v.items()}
        return {"$map": [[encode_value(k), encode_value(x)] for k, x in v.items()]}
    raise TypeError(f"a {type(v).__name__} cannot be exported")


def decode_value(v: Any, where: str = "value") -> Any:
    """The inverse of ``encode_value``; ``ValueError`` says where a tagged object is malformed."""
    if isinstance(v, list):
        return [decode_value(x, where) for x in v]
    if not isinstance(v, dict):
        return v
    if len(v) == 1 and next(iter(v)) in _TAGS:
        tag, body = next(iter(v.items()))
        try:
            if tag == "$bytes":
                return base64.b64decode(body, validate=True)
            if tag == "$float":
                if isinstance(body, str) and body.startswith("nan:") and len(body) == 20:
                    nan: float = struct.unpack(">d", bytes.fromhex(body[4:]))[0]
                    if nan == nan:
                        raise ValueError(body)
                    return nan
                if body not in ("nan", "inf", "-inf"):
                    raise ValueError(body)
                return float(body)
            if tag == "$ext":
                return msgpack.ExtType(int(body[0]), base64.b64decode(body[1], validate=True))
            if tag == "$timestamp":
                return msgpack.Timestamp(int(body[0]), int(body[1]))
            return {_hashable(decode_value(k, where)): decode_value(x, where) for k, x in body}  # $map
        except (TypeError, ValueError, IndexError) as e:
            raise ValueError(f"{where}: malformed {tag} ({type(e).__name__}: {e})") from None
    return {k: decode_value(x, where) for k, x in v.items()}


def _hashable(k: Any) -> Any:
    return tuple(_hashable(x) for x in k) if isinstance(k, list) else k


# -- files ------------------------------------------------------------------------------------------


def _read_doc(path: Path) -> dict[str, Any]:
    """The capture's document, checked by the dispatcher's own reader first."""
    read_entries(path)  # raises ReplayFileError with the reason
    doc: dict[str, Any] = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=False)
    return doc


def export_lines(path: str | Path) -> Iterator[str]:
    """The capture as JSON lines: a header, then one object per envelope."""
    doc = _read_doc(Path(path))
    header = {k: encode_value(v) for k, v in doc.items() if k != "entries"}
    yield json.dumps(header, allow_nan=False)
    for row in doc["entries"]:
        obj = {f: encode_value(v) for f, v in zip(FIELDS, row, strict=False)}
        if isinstance(row[5], int) and not isinstance(row[5], bool) and row[5] in QoS._value2member_map_:
            obj["qos"] = QoS(row[5]).name
        if len(row) > len(FIELDS):
            obj["extra"] = encode_value(row[len(FIELDS):])
        yield json.dumps(obj, allow_nan=False)


def import_lines(lines: Iterator[str] | TextIO, where: str = "input") -> bytes:
    """A capture (msgpack bytes) from JSON lines made by ``export_lines``."""
    doc: dict[str, Any] | None = None
    entries: list[list[Any]] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        at = f"{where}:{i}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise CliError(f"{at}: not JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(obj, dict):
            raise CliError(f"{at}: expected a JSON object, got {type(obj).__name__}")
        try:
            if doc is None:
                doc = {k: decode_value(v, at) for k, v in obj.items()}
                if doc.get("format") != FORMAT:
                    raise CliError(f"{at}: the first line is not a {FORMAT} header (made by netharness replay export)")
                doc["entries"] = entries
                continue
            entries.append(_row(obj, at))
        except ValueError as e:
            raise CliError(str(e)) from None
    if doc is None:
        raise CliError(f"{where}: empty; expected a header line and one line per envelope")
    if doc.get("version") != VERSION:
        raise CliError(f"{where}: replay version {doc.get('version')!r} is not supported (this writes {VERSION})")
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


def _row(obj: dict[str, Any], at: str) -> list[Any]:
    extra = obj.pop("extra", None)
    n = len(obj)
    if n < FIELDS.index("reply_to") + 1 or list(obj) != list(FIELDS[:n]):
        raise ValueError(f"{at}: expected the fields {', '.join(FIELDS)} in this order (kind optional), "
                         f"got {', '.join(obj)}")
    row = [decode_value(obj[f], f"{at}: {f}") for f in FIELDS[:n]]
    if isinstance(row[5], str):
        try:
            row[5] = QoS[row[5]].value
        except KeyError:
            raise ValueError(f"{at}: qos {row[5]!r} is not a tier; tiers: {', '.join(QoS.__members__)}") from None
    if extra is not None:
        if not isinstance(extra, list):
            raise ValueError(f"{at}: extra must be a list")
        row += decode_value(extra, f"{at}: extra")
    return row


# -- inspect ----------------------------------------------------------------------------------------


def inspect(path: str | Path) -> dict[str, Any]:
    """A summary of a capture: registry, span, and per channel and per player."""
    doc = _read_doc(Path(path))
    entries = read_entries(path)
    summary: dict[str, Any] = {"file": str(path), "registry_hash": doc.get("registry_hash"),
                               "envelopes": len(entries), "channels": {}, "players": {}}
    if entries:
        t0, t1 = min(e.t for e in entries), max(e.t for e in entries)
        summary.update(first_t=t0, last_t=t1, span_s=t1 - t0)
    for e in entries:
        channel = e.envelope.name.split(".", 2)[1] if e.envelope.name.count(".") >= 2 else e.envelope.name
        pid = "-" if e.envelope.meta.player_id is None else str(e.envelope.meta.player_id)
        for table, key in ((summary["channels"], channel), (summary["players"], pid)):
            s = table.setdefault(key, {"envelopes": 0, "in": 0, "out": 0, "names": {}, "first_t": e.t,
                                       "last_t": e.t})
            s["envelopes"] += 1
            s[e.direction] += 1
            label = e.envelope.name + (f" ({e.kind})" if e.kind else "")
            s["names"][label] = s["names"].get(label, 0) + 1
            s["first_t"], s["last_t"] = min(s["first_t"], e.t), max(s["last_t"], e.t)
    return summary


def _inspect_text(s: dict[str, Any]) -> str:
    head = [f"capture {s['file']}: {s['envelopes']} envelopes, registry {s['registry_hash']}"]
    if s["envelopes"]:
        head.append(f"time span: {s['span_s']:.3f} s (t = {s['first_t']:.3f} .. {s['last_t']:.3f})")

    def rows(table: str) -> list[tuple[Any, ...]]:
        return [(k, v["envelopes"], v["in"], v["out"], f"{v['last_t'] - v['first_t']:.3f}",
                 ", ".join(f"{n} x{c}" for n, c in sorted(v["names"].items())))
                for k, v in sorted(s[table].items(), key=lambda kv: (len(kv[0]), kv[0]))]

    cols = ("envelopes", "in", "out", "span s", "names")
    return "\n".join([*head, "", "per channel", text_table(("channel", *cols), rows("channels")), "",
                      "per player", text_table(("player", *cols), rows("players"))])


# -- command ----------------------------------------------------------------------------------------


def _writable(out: str, force: bool) -> Path:
    p = Path(out)
    if p.is_dir():
        raise CliError(f"-o {out}: is a folder; give a file name")
    if p.exists() and not force:
        raise CliError(f"-o {out}: already exists; pass --force to replace it")
    if not p.parent.is_dir():
        raise CliError(f"-o {out}: folder {p.parent} does not exist")
    return p


def _write_atomic(p: Path, data: bytes, check: Callable[[Path], None] | None = None) -> None:
    """Write beside ``p``, ``check`` the written file, then rename it over ``p``: a failed write or a failed
    check leaves ``p`` as it was."""
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        tmp.write_bytes(data)
        if check is not None:
            check(tmp)
        os.replace(tmp, p)
    except OSError as e:
        raise CliError(f"-o {p}: cannot write it: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _valid_capture(source: str) -> Callable[[Path], None]:
    def check(tmp: Path) -> None:
        try:
            read_entries(tmp)
        except ReplayFileError as e:
            raise CliError(f"{source}: does not make a valid capture: {str(e).removeprefix(f'{tmp}: ')}") from None
    return check


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="netharness replay", description=__doc__)
    sub = ap.add_subparsers(dest="action", required=True, metavar="{inspect,export,import}",
                            parser_class=Parser)
    p_in = sub.add_parser("inspect", help="summary per channel, player and time span")
    p_in.add_argument("capture", help="a replay capture (msgpack)")
    p_in.add_argument("--json", action="store_true", help="the summary as JSON")
    p_ex = sub.add_parser("export", help="a capture to JSON lines")
    p_ex.add_argument("capture", help="a replay capture (msgpack)")
    p_ex.add_argument("-o", "--output", default="-", help="the JSON lines file (default: standard output)")
    p_ex.add_argument("--force", action="store_true", help="replace the output file if it exists")
    p_im = sub.add_parser("import", help="JSON lines back to a capture")
    p_im.add_argument("jsonl", help="JSON lines made by export ('-': standard input)")
    p_im.add_argument("-o", "--output", required=True, help="the capture file to write")
    p_im.add_argument("--force", action="store_true", help="replace the output file if it exists")
    args = ap.parse_args(argv)
    prog = f"netharness replay {args.action}"
    try:
        if args.action == "inspect":
            s = inspect(args.capture)
            print(json.dumps(s, indent=1) if args.json else _inspect_text(s))
        elif args.action == "export":
            out = None if args.output == "-" else _writable(args.output, args.force)
            text = "".join(line + "\n" for line in export_lines(args.capture))
            if out is None:
                sys.stdout.write(text)
            else:
                _write_atomic(out, text.encode())
                print(f"exported {text.count(chr(10)) - 1} envelopes to {out}", file=sys.stderr)
        else:
            out = _writable(args.output, args.force)
            if args.jsonl == "-":
                data = import_lines(sys.stdin, "<stdin>")
            else:
                try:
                    with open(args.jsonl, encoding="utf-8") as f:
                        data = import_lines(f, args.jsonl)
                except FileNotFoundError:
                    raise CliError(f"{args.jsonl}: no such file") from None
                except UnicodeDecodeError:
                    raise CliError(f"{args.jsonl}: not text; import reads the JSON lines that export writes") from None
                except OSError as e:
                    raise CliError(f"{args.jsonl}: cannot read it: {e.strerror or e}") from None
            _write_atomic(out, data, _valid_capture(args.jsonl))
            print(f"imported {len(read_entries(out))} envelopes to {out}", file=sys.stderr)
    except (CliError, ReplayFileError) as e:
        return fail(prog, str(e))
    return 0
