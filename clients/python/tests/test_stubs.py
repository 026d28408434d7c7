"""Checks that the checked-in stubs in cutter_backup/_gen/ match proto/ (no daemon needed)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parent.parent


def _gen_stubs():
    spec = importlib.util.spec_from_file_location("gen_stubs", CLIENT_DIR / "gen_stubs.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stubs_are_current():
    """Regenerates into a temp dir; any difference means: run gen_stubs.py."""
    gen = _gen_stubs()
    try:
        diffs = gen.differences()
    except gen.GenError as e:
        raise AssertionError(f"cannot regenerate the stubs: {e}") from e
    assert not diffs, (
        "cutter_backup/_gen/ is stale: the proto changed (or the generator pin did) "
        "without a regeneration. Run clients/python/gen_stubs.py (with the venv of "
        "scripts/python-venv.sh) and commit the result.\n" + "\n".join(diffs)
    )


def test_grpc_stub_imports_relatively():
    text = (CLIENT_DIR / "cutter_backup" / "_gen" / "backup_pb2_grpc.py").read_text()
    assert "from . import backup_pb2 as " in text
    assert not re.search(r"(?m)^\s*(from|import) cutter\.", text)


def test_generator_pin_is_documented_consistently():
    """The pin in requirements-dev.txt is the one named in _gen/ and pyproject.toml."""
    gen = _gen_stubs()
    pin = gen.pinned_tools_version()
    init = (CLIENT_DIR / "cutter_backup" / "_gen" / "__init__.py").read_text()
    assert f"grpcio-tools=={pin}" in init
    assert f"grpcio-tools=={pin}" in (CLIENT_DIR / "pyproject.toml").read_text()
