"""Add bytecode compiled by the Lambda runtime's Python to a deployment zip, in place.

Lambda unpacks the zip into a read-only `/var/task`, so a module without a matching
`__pycache__/*.cpython-3XX.pyc` is compiled again at every cold start and the result is
thrown away. `sls package` runs this script (through `deploy/bytecode.js`) with the same
CPython version as `provider.runtime`, after the requirements are injected:

    python3.12 deploy/compile_bytecode.py --expect 3.12 .serverless/agent-rebalance.zip

Every `.py` in the zip, ours and the wheels', gets an `unchecked-hash` pyc (PEP 552): the
code directory cannot change after the upload, so Python need neither stat nor hash the
source to trust it. Bytecode already in the zip (another interpreter's, or timestamp pycs
whose source mtimes the zip does not keep) is replaced. Entries keep their order, modes and
dates; new entries get a fixed date, so the same input gives the same zip.
"""

from __future__ import annotations

import argparse
import importlib.util
import marshal
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
FILE_MODE = 0o100644 << 16


def _is_bytecode(name: str) -> bool:
    return name.endswith((".pyc", ".pyo")) or "/__pycache__/" in f"/{name}"


def _pyc_name(source: str) -> str:
    """`core/queue.py` -> `core/__pycache__/queue.cpython-312.pyc` for this interpreter."""
    return importlib.util.cache_from_source(source, optimization="").replace(os.sep, "/")


def _compile(source: bytes, name: str) -> bytes:
    """Bytecode of one module as an unchecked-hash pyc; raises SyntaxError on bad source."""
    code = compile(source, f"/var/task/{name}", "exec", dont_inherit=True)
    flags = 0b01  # hash-based, not checked against the source (PEP 552)
    return (
        importlib.util.MAGIC_NUMBER
        + flags.to_bytes(4, "little")
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


def compile_zip(path: Path) -> tuple[int, list[str]]:
    """Rewrite the zip at `path` with bytecode; return (modules compiled, names that failed)."""
    compiled, failed = 0, []
    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".zip")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:
            for info, data in entries:
                if _is_bytecode(info.filename):
                    continue
                dst.writestr(info, data)
                if not info.filename.endswith(".py"):
                    continue
                try:
                    pyc = _compile(data, info.filename)
                except (SyntaxError, ValueError):
                    failed.append(info.filename)
                    continue
                pyc_info = zipfile.ZipInfo(_pyc_name(info.filename), FIXED_DATE)
                pyc_info.external_attr = FILE_MODE
                pyc_info.compress_type = zipfile.ZIP_DEFLATED
                dst.writestr(pyc_info, pyc)
                compiled += 1
        shutil.copymode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return compiled, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("zips", nargs="+", type=Path)
    parser.add_argument("--expect", metavar="X.Y", help="fail unless this Python is version X.Y")
    args = parser.parse_args(argv)
    running = "{}.{}".format(*sys.version_info[:2])
    if args.expect and running != args.expect:
        print(
            f"compile_bytecode: the runtime is python{args.expect} but this is Python {running}"
            f" ({sys.executable}); its bytecode would be useless in Lambda",
            file=sys.stderr,
        )
        return 2
    status = 0
    for path in args.zips:
        compiled, failed = compile_zip(path)
        ours = [name for name in failed if name.startswith(("core/", "handlers/"))]
        print(f"compile_bytecode: {path}: {compiled} modules compiled by Python {running}")
        for name in failed:
            print(f"compile_bytecode: {name}: does not compile, shipped as source", file=sys.stderr)
        if ours:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
