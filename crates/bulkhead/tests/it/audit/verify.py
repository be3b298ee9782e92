"""An audit export verifier written from docs/audit.md alone.

Usage: verify.py FILE KEYS.json [--operator]. Exit 0 printing a JSON
summary (events, first, last, head, checkpoint), or exit 1 printing
"line N: reason" to stderr. Standard library plus `cryptography` for
Ed25519.
"""

import hashlib
import json
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64


def number(x):
    if isinstance(x, bool):
        raise TypeError
    if isinstance(x, int):
        if abs(x) <= 2**53:
            return str(x)
        x = float(x)
    if x == 0:
        return "0"
    sign = "-" if x < 0 else ""
    r = repr(abs(x))
    mant, exp = (r.split("e") + ["0"])[:2]
    exp = int(exp)
    ip, _, fp = mant.partition(".")
    if fp == "0":
        fp = ""
    all_digits = ip + fp
    lead = len(all_digits) - len(all_digits.lstrip("0"))
    digits = all_digits.lstrip("0").rstrip("0")
    n = len(ip) + exp - lead
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    m = digits[0] + ("." + digits[1:] if k > 1 else "")
    return sign + m + "e" + ("+" if e >= 0 else "-") + str(abs(e))


def jcs(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (int, float)):
        return number(v)
    if isinstance(v, list):
        return "[" + ",".join(jcs(i) for i in v) + "]"
    items = sorted(v.items(), key=lambda kv: kv[0].encode("utf-16-be"))
    return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(x) for k, x in items) + "}"


def event_hash(e):
    body = {k: x for k, x in e.items() if k != "hash"}
    if e.get("v") == 1:
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    else:
        text = jcs(body)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class Bad(Exception):
    pass


def verify(path, keys, operator):
    data = open(path, "rb").read()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        # The last line has no newline: the file was cut.
        if len(lines) >= 1:
            pass
    truncated = not data.endswith(b"\n") and data != b""
    tenant = None
    have_tenant = operator
    prev = None
    expected = None
    summary = None
    last_cp = None
    for i, raw in enumerate(lines):
        n = i + 1
        if truncated and i == len(lines) - 1:
            raise Bad(f"line {n}: truncated last line")
        text = raw.decode("utf-8")
        obj = json.loads(text, object_pairs_hook=dict)
        if obj.get("type") == "checkpoint":
            if jcs(obj) != text:
                raise Bad(f"line {n}: checkpoint not canonical")
            if have_tenant and obj["tenant"] != tenant:
                raise Bad(f"line {n}: checkpoint of another tenant")
            if summary is None or obj["seq"] > summary["last"]:
                raise Bad(f"line {n}: events missing")
            if obj["seq"] < summary["last"]:
                raise Bad(f"line {n}: checkpoint out of place")
            if obj["head"] != prev:
                raise Bad(f"line {n}: checkpoint head mismatch")
            key = next((k for k in keys if k["id"] == obj["key_id"]), None)
            if key is None:
                raise Bad(f"line {n}: unknown key")
            signed = jcs({k: x for k, x in obj.items() if k != "sig"}).encode("utf-8")
            try:
                Ed25519PublicKey.from_public_bytes(bytes.fromhex(key["public_key"])).verify(
                    bytes.fromhex(obj["sig"]), signed
                )
            except (InvalidSignature, ValueError):
                raise Bad(f"line {n}: signature invalid")
            last_cp = obj["seq"]
            continue
        if obj.get("v", 0) >= 2 and jcs(obj) != text:
            raise Bad(f"line {n}: event not canonical")
        if not have_tenant:
            tenant, have_tenant = obj["tenant"], True
        elif not operator and obj["tenant"] != tenant:
            raise Bad(f"line {n}: event of another tenant")
        seq = obj["seq"]
        if expected is None:
            if seq == 1 and obj["prev_hash"] != GENESIS:
                raise Bad(f"line {n}: first event does not start at the genesis")
            prev = obj["prev_hash"]
        elif seq < expected:
            raise Bad(f"line {n}: reordered")
        elif seq > expected:
            nxt = json.loads(lines[i + 1]) if i + 1 < len(lines) else {}
            raise Bad(f"line {n}: " + ("reordered" if nxt.get("seq") == expected else "sequence gap"))
        if obj["prev_hash"] != prev:
            raise Bad(f"line {n}: prev_hash mismatch")
        if event_hash(obj) != obj["hash"]:
            raise Bad(f"line {n}: hash mismatch")
        prev = obj["hash"]
        expected = seq + 1
        if summary is None:
            summary = {"events": 0, "first": seq}
        summary["events"] += 1
        summary["last"] = seq
        summary["head"] = obj["hash"]
    if summary is None:
        raise Bad("line 1: no events")
    summary["checkpoint"] = last_cp
    return summary


def main():
    path, keys_path = sys.argv[1], sys.argv[2]
    keys = json.load(open(keys_path))
    keys = keys.get("keys", keys) if isinstance(keys, dict) else keys
    try:
        print(json.dumps(verify(path, keys, "--operator" in sys.argv[3:])))
    except Bad as e:
        print(str(e), file=sys.stderr)
        sys.exit(1)


main()
