"""README.md and docs/: every link resolves, every docs page is linked from the README, and every `toolchain …`
command in a fenced block names a real subcommand with options it has (its --help lists them)."""
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from toolchain.cli import main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"```[a-z]*\n(.*?)```", re.S)


def links(page: Path) -> list[str]:
    return [target for target in LINK.findall(page.read_text()) if not re.match(r"[a-z]+:", target)]


def commands() -> list[tuple[str, str]]:
    """(page, command line) for every fenced line that runs ``toolchain``."""
    found = []
    for page in PAGES:
        for block in FENCE.findall(page.read_text()):
            for line in block.splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("toolchain "):
                    found.append((page.name, line))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    missing = [t for t in links(page) if not (page.parent / t.split("#", 1)[0]).exists()]
    assert missing == []


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.split("#", 1)[0]).resolve() for t in links(ROOT / "README.md")}
    assert set(p.resolve() for p in PAGES[1:]) <= linked


def test_the_readme_stays_short():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 150


HELP: dict[str, str] = {}


@pytest.mark.parametrize("page,line", commands(), ids=lambda v: v if isinstance(v, str) and len(v) < 30 else None)
def test_documented_commands_exist_with_their_options(page, line):
    sub = line.split()[1]
    if sub not in HELP:
        result = CliRunner().invoke(main, [sub, "--help"])
        assert result.exit_code == 0, f"{page}: `toolchain {sub}` is not a command"
        HELP[sub] = result.output
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line))
    unknown = sorted(o for o in options if o not in HELP[sub] and o != "--help")
    assert unknown == [], f"{page}: `{line}` uses options `toolchain {sub}` does not have"


def test_the_runtime_example_in_the_docs_runs(cpu_bundle):
    """docs/bundles.md's Python example, run as written on a real cpu bundle and a val image."""
    from tests.conftest import VAL

    _, result = cpu_bundle
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "bundles.md").read_text(), re.S)
    image = next((VAL / "images").rglob("*.jpg"))
    code = code.replace('"build/featherface-v1/cpu"', repr(str(result.bundle))).replace('"photo.jpg"', repr(str(image)))
    printed = []
    exec(compile(code, "bundles.md", "exec"), {"print": printed.append})
    assert printed and all(line.startswith("face ") for line in printed)
