#!/usr/bin/env python3
"""Fills an IMS Broker store (SQLite) with N persistent sessions, for the start-up measurement of issue 6.

    python3 tools/gen-sessions.py DATA_DIR [N]

DATA_DIR must hold a broker.db created by the broker (start it once on that directory and stop it),
so the schema is the broker's own. Each session gets a client id GID_IMS@@@gen-<i>, a user
bench<i % 10>, two subscriptions (its user's inbox and the benchgrp group, both QoS 1, the blob
format of MessageCodec.EncodeSubscriptions) and a client-id binding. The broker must be stopped.
"""
import os
import sqlite3
import struct
import sys
import time


def dotnet_string(s: str) -> bytes:
    """BinaryWriter.Write(string): 7-bit encoded byte length, then UTF-8."""
    data = s.encode("utf-8")
    n, prefix = len(data), bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        prefix.append(b | (0x80 if n else 0))
        if not n:
            return bytes(prefix) + data


def subscriptions(filters):
    out = bytearray([1]) + struct.pack("<i", len(filters))  # format V1, count
    for f in filters:
        # filter, qos, no local, retain as published, retain handling, subscription id
        out += dotnet_string(f) + bytes([1, 0, 0, 0]) + struct.pack("<I", 0)
    return bytes(out)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    path = os.path.join(sys.argv[1], "broker.db")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    if not os.path.exists(path):
        sys.exit(f"{path} not found: start the broker once with Broker__DataPath={sys.argv[1]}, then stop it")
    db = sqlite3.connect(path)
    now = int(time.time() * 1000)
    sessions, owners = [], []
    for i in range(count):
        client, user = f"GID_IMS@@@gen-{i:06d}", f"bench{i % 10}"
        blob = subscriptions([f"IMS/{user}/Inbox/#", "IMS/benchgrp/#"])
        sessions.append((client, user, "user", 7 * 24 * 3600, now, blob))
        owners.append((client, user))
    with db:
        db.executemany("INSERT OR REPLACE INTO sessions (client_id, user_id, role, expiry, disconnected_at, subscriptions) VALUES (?, ?, ?, ?, ?, ?)", sessions)
        db.executemany("INSERT OR REPLACE INTO client_owners (client_id, user_id) VALUES (?, ?)", owners)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    total = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    db.close()
    print(f"{path}: {total} sessions")


if __name__ == "__main__":
    main()
