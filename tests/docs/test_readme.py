"""The README (issue 20.1): its quick starts are the site's quick-start files verbatim, so the
suite runs them (tests/docs/test_snippets.py::test_quickstart); its links into the site and the
repository point at files (and headings) that exist; its install section names every extra of
pyproject.toml and the wheel the build makes; a new user finds install, a quick start and the
error tree near the top."""

from __future__ import annotations

import re
import tomllib

from tests.docs.snippets import REPO, files

README = (REPO / "README.md").read_text(encoding="utf-8")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def test_every_python_block_is_a_quickstart_file() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    quickstart = files("quickstart.md")
    assert blocks, "the README has no quick start"
    assert all(block in quickstart.values() for block in blocks)
    assert set(blocks) == {quickstart["server.py"], quickstart["middle_tier.py"]}


def test_shell_lines_are_the_quickstarts() -> None:
    page = (REPO / "docs" / "quickstart.md").read_text(encoding="utf-8")
    run = [
        line
        for block in re.findall(r"```sh\n(.*?)```", _section("Quick start"), re.S)
        for line in block.splitlines()
    ]
    assert len(run) == 5
    for line in run:
        assert line in page, line


def test_install_names_every_extra_and_the_wheel_the_build_makes() -> None:
    install = _section("Install")
    table = set(re.findall(r"^\| `?([a-z]+)`?(?:, `([a-z]+)`)?", install, re.M))
    named = {name for row in table for name in row if name}
    assert named >= set(PYPROJECT["project"]["optional-dependencies"]), named
    version = PYPROJECT["project"]["version"]
    assert f"dist/grpc_obo-{version}-py3-none-any.whl" in install
    assert PYPROJECT["project"]["requires-python"] == ">=3.11" and "3.11 or later" in install


def _slug(heading: str) -> str:
    # MyST's anchors (myst_heading_anchors): lower case, punctuation dropped, spaces as dashes.
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_point_at_files_and_headings_that_exist() -> None:
    links = re.findall(r"\]\(((?!https?:)[^)#]+)(#[^)]*)?\)", README)
    assert links
    missing = [path for path, _ in links if not (REPO / path).exists()]
    assert not missing
    for path, anchor in links:
        if anchor:
            text = (REPO / path).read_text(encoding="utf-8")
            headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
            assert anchor[1:] in headings, f"{path}{anchor}"


def test_the_site_pages_the_readme_promises_are_linked() -> None:
    for page in (
        "docs/quickstart.md",
        "docs/reference/api.md",
        "docs/reference/errors.md",
        "docs/reference/configuration.md",
        "docs/reference/cli.md",
        "docs/benchmarks.md",
        "docs/changes.md",
        "docs/guides/http-downstream.md",
        "docs/guides/front-door.md",
        "docs/guides/secretless.md",
        "CONTRIBUTING.md",
    ):
        assert f"]({page}" in README, page


def test_install_quick_start_and_errors_come_first() -> None:
    head = "\n".join(README.splitlines()[:40])
    assert "docs/reference/errors.md" in head and "docs/quickstart.md" in head
    sections = re.findall(r"^## (.+)$", README, re.M)
    assert sections[:2] == ["Install", "Quick start"]
    assert "make demo" in _section("On a fresh clone") and "make test" in README
    assert len(README.splitlines()) <= 260, "the README is a front page: details go to the site"
