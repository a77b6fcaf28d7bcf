"""The README and docs/ stay true: every link leads somewhere, and the own-data commands run."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from conftest import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces as '-'."""
    return {re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
            for line in page.read_text().splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_link_leads_to_a_file_and_heading_that_exist(page):
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target}: no such file"
        if anchor:
            assert anchor in anchors(file), f"{page.name}: {target}: no such heading"


def test_the_readme_is_a_front_door_of_at_most_about_250_lines():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    for heading in ("## Quick start", "## Results", "## Using your own data", "## Choosing a model",
                    "## The files", "## More documentation", "## Tests"):
        assert heading in text


def test_the_readmes_own_data_commands_run_as_shown(tmp_path):
    """The bash block of 'Using your own data', line by line, in an empty folder (2 epochs, not 100)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Using your own data"):]
    block = section[section.index("```bash") + len("```bash"):section.index("```", section.index("```bash") + 7)]
    commands = [line.split("#")[0].strip() for line in block.splitlines()]
    commands = [shlex.split(c) for c in commands if c]
    assert [c[1] for c in commands] == ["tests/make_shapes.py", "dataset.py", "train.py"]
    for command in commands:
        argv = [sys.executable, str(ROOT / command[1]), *command[2:]]
        if command[1] == "train.py":
            argv += ["--epochs", "2"]
        done = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
        for expected in {"dataset.py": ["OK: no problems found", "converted to RGB: mode=auto"],
                         "train.py": ["read as RGB (mode=auto", "Test accuracy:"]}.get(command[1], []):
            assert expected in done.stdout, (command, expected)
    assert (tmp_path / "results" / "best.pt").is_file()
