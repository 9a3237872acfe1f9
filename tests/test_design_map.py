"""The map that opens docs/design.md names every module of the service, and only those."""

import re

from harness import ROOT


def mapped_paths() -> set[str]:
    """The paths the map's tree draws: each name under the folders indented above it."""
    text = (ROOT / "docs" / "design.md").read_text()
    tree = re.search(r"## Where things are\n\n```\n(.*?)```", text, re.S)[1]
    folders: list[tuple[int, str]] = []
    paths = set()
    for line in tree.splitlines():
        name = re.match(r"( *)(\S+)", line)
        if not name or not name[2].endswith((".py", "/")):
            continue  # a comment continued on the next line
        depth = len(name[1])
        folders = [(d, f) for d, f in folders if d < depth]
        path = "".join(f for _, f in folders) + name[2]
        if name[2].endswith("/"):
            folders.append((depth, name[2]))
        paths.add(path)
    return paths


def test_the_map_names_every_module_of_the_service_and_no_other():
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "booking").rglob("*.py")}
    mapped = {path for path in mapped_paths() if path.startswith("booking/")}
    mapped_modules = {path for path in mapped if path.endswith(".py")}
    missing_init = {m for m in modules - mapped_modules if m.endswith("/__init__.py")}
    assert modules - mapped_modules - missing_init == set(), "modules missing from the map"
    assert mapped_modules - modules == set(), "the map names modules that do not exist"
