#!/usr/bin/env python3
"""Recomputes a labloop audit chain from a JSON export, without labloop.

An export is what GET /v1/audit answers ({"entries": [...], "next": ...}; `labloop --json audit`
prints the same), a JSON array of entries, or one entry per line; several files are read in order
(one per page). Each entry is {seq, prev_hash, who, what, subject, lab_time, wall_time, why, doc}
and its "hash".

The rule (core/chain.h): hash = SHA-256(prev_hash || canonical JSON of the entry without "hash"),
lowercase hex; the first entry's prev_hash is 64 zeros. Canonical JSON is what jansson prints with
JSON_COMPACT | JSON_SORT_KEYS: keys sorted by their UTF-8 bytes, no whitespace, text as UTF-8
with only '"', '\\' and control characters escaped (\\b \\f \\n \\r \\t, others as \\u00XX in
upper case), integers as digits, reals as C's "%.17g" with ".0" added when that has neither '.'
nor 'e', and the exponent without '+' or leading zeros ("1e20", "1e-5").

Usage: audit_verify.py [FILE]...   (stdin when none). Exit 0 when the chain holds, 1 when it does
not (each problem on a line with the entry's seq), 2 when the input is not an export.
"""
import hashlib
import json
import sys

GENESIS = "0" * 64


def real(x):
    s = "%.17g" % x
    if s in ("inf", "-inf", "nan"):
        raise ValueError("not a JSON number: %s" % s)
    if "." not in s and "e" not in s:
        s += ".0"
    if "e" in s:
        mant, exp = s.split("e")
        sign = "-" if exp.startswith("-") else ""
        s = mant + "e" + sign + exp.lstrip("+-").lstrip("0")
    return s


def text(s):
    out = ['"']
    for ch in s:
        c = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\b\f\n\r\t":
            out.append({"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch])
        elif c < 0x20:
            out.append("\\u%04X" % c)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def canonical(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return real(v)
    if isinstance(v, str):
        return text(v)
    if isinstance(v, list):
        return "[" + ",".join(canonical(x) for x in v) + "]"
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(text(k) + ":" + canonical(v[k]) for k in keys) + "}"
    raise ValueError("not JSON: %r" % (v,))


def entries_of(doc):
    if isinstance(doc, dict) and isinstance(doc.get("entries"), list):
        return doc["entries"]
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict) and "seq" in doc:
        return [doc]
    raise ValueError("not an audit export")


def read(files):
    out = []
    for f in files:
        data = f.read()
        try:
            out += entries_of(json.loads(data))
        except json.JSONDecodeError:
            for line in data.splitlines():
                if line.strip():
                    out += entries_of(json.loads(line))
    return out


def check(entries):
    problems = []
    prev_hash, want = None, None
    for e in entries:
        seq = e.get("seq")
        if want is None:
            want = seq
            prev_hash = GENESIS if seq == 1 else e.get("prev_hash")
        if seq != want:
            problems.append((want, "seq %r where %d was expected (missing or moved)" % (seq, want)))
        body = {k: v for k, v in e.items() if k != "hash"}
        h = hashlib.sha256((str(e.get("prev_hash")) + canonical(body)).encode("utf-8")).hexdigest()
        if h != e.get("hash"):
            problems.append((seq, "hash does not match prev_hash and the entry (entry edited)"))
        if e.get("prev_hash") != prev_hash:
            problems.append((seq, "prev_hash is not the hash of the entry before it"))
        prev_hash = e.get("hash")
        want = (seq if isinstance(seq, int) else want) + 1
    return problems


def main(argv):
    try:
        files = [open(p, encoding="utf-8") for p in argv[1:]] or [sys.stdin]
        entries = read(files)
    except (OSError, ValueError) as err:
        print("audit_verify: %s" % err, file=sys.stderr)
        return 2
    problems = check(entries)
    for seq, what in problems:
        print("seq %s: %s" % (seq, what))
    head = entries[-1] if entries else None
    print("%s: %d entries, head seq %s hash %s" % ("TAMPERED" if problems else "ok", len(entries),
          head and head.get("seq"), head and head.get("hash")))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
