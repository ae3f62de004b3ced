"""The generated code committed for protos/ is what `make protos` would make of them now."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def _gen_protos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gen_protos", module)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_match_the_protos() -> None:
    problems = _gen_protos().check()
    assert problems == [], "stale generated code, run `make protos`:\n" + "\n".join(problems)


def test_the_check_notices_a_changed_proto(tmp_path: Path) -> None:
    gen = _gen_protos()
    shutil.copytree(ROOT / "protos" / "workspace", tmp_path / "workspace")
    vault = tmp_path / "workspace" / "v1" / "vault.proto"
    vault.write_text(
        vault.read_text().replace("bytes key = 2;", "bytes key = 2;\n  int64 ttl = 4;")
    )
    problems = gen.stale(tmp_path / "workspace", ROOT / "examples" / "gen", include=tmp_path)
    assert problems == [
        "examples/gen/workspace/v1/vault_pb2.py is older than workspace/v1/vault.proto"
    ]


def test_the_check_notices_a_proto_without_code(tmp_path: Path) -> None:
    gen = _gen_protos()
    shutil.copytree(ROOT / "protos" / "workspace", tmp_path / "workspace")
    (tmp_path / "workspace" / "v1" / "extra.proto").write_text(
        'syntax = "proto3";\npackage workspace.v1;\nmessage Extra {}\n'
    )
    problems = gen.stale(tmp_path / "workspace", ROOT / "examples" / "gen", include=tmp_path)
    assert "missing examples/gen/workspace/v1/extra_pb2.py" in problems
