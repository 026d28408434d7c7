"""`python -m cutter_backup`: selftest, status and backup from a shell, like cutterctl.

    python -m cutter_backup selftest [--socket PATH] [--json]
    python -m cutter_backup status   [--socket PATH] [--json]
    python -m cutter_backup backup --run-id ID [--socket PATH]

Output and exit codes are cutterctl's: `SELFTEST: PASS|FAIL` then one line
per check; `backup` prints the envelope as JSON. Exit 0 success (selftest
PASS, complete envelope), 1 the daemon said no (selftest FAIL, refused,
failed, incomplete envelope, permission denied), 2 bad usage, 3 the daemon
cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from .channel import DEFAULT_SOCKET
from .client import Client
from .errors import CutterBackupError, IncompleteEnvelope, Unavailable
from .models import clean

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3

PROG = "python -m cutter_backup"


def _parser() -> argparse.ArgumentParser:
    # --socket and --json are accepted before or after the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--socket",
        default=argparse.SUPPRESS,
        help=f"the daemon's socket (default {DEFAULT_SOCKET})",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print JSON for scripts instead of text",
    )
    ap = argparse.ArgumentParser(
        prog=PROG, description="Drive cutter-backupd from Python.", parents=[common]
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser(
        "selftest", parents=[common], help="run every fail-closed check; exit 0 PASS, 1 FAIL"
    )
    sub.add_parser(
        "status", parents=[common], help="version, readiness, key, last backup, artifacts"
    )
    b = sub.add_parser(
        "backup", parents=[common], help="take the pre-write backup of a run; print its envelope"
    )
    b.add_argument("--run-id", required=True, help="the orchestrator's run id")
    return ap


def _error(e: CutterBackupError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": {"code": e.code_name, "message": str(e)}}))
    print(f"{PROG}: {clean(str(e))}", file=sys.stderr)
    if isinstance(e, Unavailable) and e.unreachable:
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def _selftest(c: Client, as_json: bool) -> int:
    report = c.selftest()
    if as_json:
        print(json.dumps(report.as_dict()))
    else:
        print("\n".join(report.lines()))
    return EXIT_OK if report.passed else EXIT_FAILED


def _status(c: Client, as_json: bool) -> int:
    s = c.status()
    if as_json:
        print(json.dumps(s.as_dict()))
        return EXIT_OK
    print(f"cutter-backupd {s.version} (commit {s.source_commit[:12]}), up {s.uptime_seconds}s")
    print(f"readiness:   {clean(s.summary)}")
    print(f"key:         {'…' + s.key_fpr_tail if s.key_fpr_tail else 'unset'}")
    if s.last_backup:
        b = s.last_backup
        print(f"last backup: {clean(b.run_id)} at {clean(b.created_at)} ({b.size_bytes} B)")
    else:
        print("last backup: none")
    print(f"artifacts:   {s.artifact_count} ({s.artifact_bytes} B) in {clean(s.backup_dir)}")
    for r in s.running:
        print(f"running:     {clean(r.run_id)} ({r.bytes} B dumped, {r.elapsed_ms} ms)")
    return EXIT_OK


def _backup(c: Client, run_id: str) -> int:
    try:
        env = c.pre_write_backup(run_id)
    except IncompleteEnvelope as e:
        # As cutterctl: show what came back, then say it is not a backup.
        print(json.dumps(e.fields))
        print(f"{PROG}: {clean(str(e))}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(env.as_dict()))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # argparse: 2 on bad usage, 0 for --help
        return int(e.code or 0) if isinstance(e.code, int) else EXIT_USAGE
    socket = getattr(args, "socket", DEFAULT_SOCKET)
    as_json = getattr(args, "json", False)
    commands: dict = {
        "selftest": lambda c: _selftest(c, as_json),
        "status": lambda c: _status(c, as_json),
        "backup": lambda c: _backup(c, args.run_id),
    }
    run: Callable[[Client], int] = commands[args.command]
    try:
        with Client(socket) as c:
            return run(c)
    except CutterBackupError as e:
        return _error(e, as_json)
    except ValueError as e:  # e.g. an empty --socket
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
