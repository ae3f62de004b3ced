"""Hostile or broken world files end in `WorldFileError`, never a traceback or a hang: deep
nesting, a FIFO (or any non-regular file, or a huge one) as the world or certificate file; and
App ID URIs are unique: a second app claiming one (or `api://<guid>` of another app's client
id) is refused by the loader and by `World.add_app`, instead of the first app silently winning."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from grpc_obo.devauthority import WorldFileError, default_world, load_world, world_from_dict


@pytest.mark.parametrize("suffix", [".json", ".toml"])
def test_deep_nesting_is_a_world_file_error(tmp_path: Path, suffix: str) -> None:
    file = tmp_path / f"deep{suffix}"
    if suffix == ".json":
        file.write_text('{"apps":' + "[" * 3000 + "]" * 3000 + "}")
    else:
        file.write_text("x = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(WorldFileError) as raised:
        load_world(file)
    assert str(file) in str(raised.value)


def _in_thread(target: object) -> BaseException | None:
    """Run `target` with a deadline: a hang fails the test instead of stalling the suite."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            target()  # type: ignore[operator]
        except BaseException as exc:
            caught.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "the loader hung"
    return caught[0] if caught else None


def test_a_fifo_as_certificate_file_is_refused_without_hanging(tmp_path: Path) -> None:
    fifo = tmp_path / "cert.pem"
    os.mkfifo(fifo)
    file = tmp_path / "world.toml"
    file.write_text('[apps.api]\ncertificate_files = ["cert.pem"]\n')
    error = _in_thread(lambda: load_world(file))
    assert isinstance(error, WorldFileError), error
    assert error.field == "apps.api.certificate_files[0]"
    assert "not a regular file" in str(error)


def test_a_fifo_or_directory_as_world_file_is_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "world.toml"
    os.mkfifo(fifo)
    error = _in_thread(lambda: load_world(fifo))
    assert isinstance(error, WorldFileError) and "not a regular file" in str(error)
    with pytest.raises(WorldFileError):
        load_world(tmp_path)


def test_oversized_files_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.pem"
    big.write_bytes(b"x" * (64 * 1024 + 1))
    file = tmp_path / "world.toml"
    file.write_text('[apps.api]\ncertificate_files = ["big.pem"]\n')
    with pytest.raises(WorldFileError, match="larger than"):
        load_world(file)
    huge = tmp_path / "huge.toml"
    huge.write_bytes(b"# " + b"x" * (1024 * 1024) + b"\n")
    with pytest.raises(WorldFileError, match="larger than"):
        load_world(huge)


def test_duplicate_app_id_uris_are_refused_by_the_loader() -> None:
    same = {"apps": {"a": {"app_id_uri": "api://orders"}, "b": {"app_id_uri": "API://orders/"}}}
    with pytest.raises(WorldFileError) as raised:
        world_from_dict(same)
    assert raised.value.field == "apps.b.app_id_uri"
    guid = "0c0ffee0-0000-4000-8000-0000000000aa"
    other = {
        "apps": {
            "a": {"client_id": guid},
            "b": {"app_id_uri": f"api://{guid}"},
        }
    }
    with pytest.raises(WorldFileError, match="'a'"):
        world_from_dict(other)
    graph = {"apps": {"fake": {"app_id_uri": "https://graph.microsoft.com"}}}
    with pytest.raises(WorldFileError, match="'graph'"):
        world_from_dict(graph)


def test_duplicate_app_id_uris_are_refused_by_add_app() -> None:
    world = default_world(with_certificates=False)
    original = world.app("original")
    with pytest.raises(ValueError, match="'original'"):
        world.add_app("copycat", scopes=["x"], app_id_uri=original.app_id_uri)
    with pytest.raises(ValueError, match="'downstream'"):
        world.add_app("squatter", app_id_uri=f"api://{world.app('downstream').client_id}")
    assert world.find_app("copycat") is None and world.find_app("squatter") is None
    assert world.resource_app(str(original.app_id_uri)) is original
