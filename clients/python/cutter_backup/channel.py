"""The gRPC channel to cutter-backupd's Unix socket, with the options it needs.

The trap: grpcio >= 1.57 sends the socket path as the HTTP/2 :authority of a
"unix:" target. The daemon's HTTP/2 stack (Rust h2) rejects that as an
invalid authority and resets the stream, which grpcio reports as
"INTERNAL: Stream removed" (or similar) on every call. The fix is one channel
option, ("grpc.default_authority", "localhost"); other languages have the
same knob: Go grpc.WithAuthority("localhost"), Java
.overrideAuthority("localhost"), grpcurl -authority localhost -unix.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import grpc

__all__ = ["DEFAULT_SOCKET", "AUTHORITY_OPTION", "CHANNEL_OPTIONS", "target", "make_channel"]

DEFAULT_SOCKET = "/run/cutter/backupd.sock"

# The one option a client of the daemon cannot do without (see above).
AUTHORITY_OPTION: tuple[str, str] = ("grpc.default_authority", "localhost")

_MiB = 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    AUTHORITY_OPTION,
    # A PreWriteBackup sends nothing while pg_dump runs (minutes): ping the
    # daemon so a hung or vanished peer is noticed, and keep pinging for the
    # whole call (grpc-core stops after 2 data-less pings by default).
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # Replies such as List grow with the number of backups; requests are
    # small (the daemon accepts at most 256 KiB).
    ("grpc.max_receive_message_length", 64 * _MiB),
    ("grpc.max_send_message_length", 16 * _MiB),
]


def target(socket: str | os.PathLike[str]) -> str:
    """The gRPC target for a socket path: "unix:" + path."""
    path = os.fspath(socket)
    if not path:
        raise ValueError("empty socket path")
    return "unix:" + path


def make_channel(
    socket: str | os.PathLike[str] = DEFAULT_SOCKET,
    extra_options: Iterable[tuple[str, Any]] = (),
) -> grpc.Channel:
    """An insecure channel to the daemon's socket with CHANNEL_OPTIONS.

    Options in extra_options replace the same-named defaults.
    """
    extra = list(extra_options)
    names = {k for k, _ in extra}
    options = [(k, v) for k, v in CHANNEL_OPTIONS if k not in names] + extra
    return grpc.insecure_channel(target(socket), options=options)
