"""The Contract table of docs/api.md and the live /openapi.json say the same, both ways.

Generic on purpose: whatever routes the table and the description hold are compared, so a
route added to one and not the other fails here, as does a status or an error code.
"""

import re

import pytest
import requests

from harness import ROOT

API_MD = ROOT / "docs" / "api.md"
EVERY_ROUTE = "every route"
ANY_OTHER = "any other URL or method"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}

Contract = dict[str, dict[str, set[str]]]  # "METHOD /path" -> status -> error codes


def parse_statuses(cell: str) -> dict[str, set[str]]:
    """`201 · 409 `sold_out` `already_booked`` -> {"201": set(), "409": {...}}."""
    statuses: dict[str, set[str]] = {}
    for item in cell.split("·"):
        match = re.fullmatch(r"\s*(\d{3})((?:\s+`[a-z_]+`)*)\s*", item)
        assert match, f"docs/api.md Contract: cannot read {item!r}"
        status, codes = match.groups()
        assert status not in statuses, f"docs/api.md Contract: {status} twice in {cell!r}"
        statuses[status] = set(re.findall(r"`([a-z_]+)`", codes))
    return statuses


def documented() -> Contract:
    """The table under `## Contract`, with the every-route row folded into each route."""
    text = API_MD.read_text()
    section = re.search(r"(?ms)^## Contract\n(.*?)(?=^## )", text)
    assert section, "docs/api.md has no ## Contract section"
    rows: Contract = {}
    for line in section.group(1).splitlines():
        row = re.fullmatch(r"\| (?:`([A-Z]+ /\S*)`|([^`|]+?)) \| (.+) \|", line)
        if not row or row.group(2) == "route":
            continue
        route = row.group(1) or row.group(2)
        assert route not in rows, f"docs/api.md Contract: {route} twice"
        rows[route] = parse_statuses(row.group(3))
    every = rows.pop(EVERY_ROUTE, {})
    for statuses in rows.values():
        if statuses is not rows.get(ANY_OTHER):
            for status, codes in every.items():
                assert status not in statuses, f"{status} is already in the every-route row"
                statuses[status] = codes
    return rows


def error_codes(response: dict, spec: dict) -> set[str]:
    """The `error` enum of a response body, through allOf and $ref."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                name = node["$ref"].rsplit("/", 1)[1]
                walk(spec["components"]["schemas"][name])
            found.update(node.get("properties", {}).get("error", {}).get("enum", []))
            for key in ("allOf", "oneOf", "anyOf"):
                for part in node.get(key, []):
                    walk(part)

    for media in response.get("content", {}).values():
        walk(media.get("schema", {}))
    return found


def described(spec: dict) -> Contract:
    contract: Contract = {}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if method in METHODS:
                contract[f"{method.upper()} {path}"] = {
                    status: error_codes(response, spec)
                    for status, response in operation["responses"].items()
                }
    anywhere = spec["components"].get("responses", {}).values()
    contract[ANY_OTHER] = {"*": set().union(*(error_codes(r, spec) for r in anywhere))}
    return contract


@pytest.fixture(scope="module")
def spec(auth_server) -> dict:
    """The description a real gunicorn serves with authentication on: the most it says."""
    return requests.get(f"{auth_server.url}/openapi.json", timeout=10).json()


def test_every_route_of_the_contract_is_described_and_the_other_way(spec):
    docs, live = documented(), described(spec)
    assert set(docs) == set(live), (
        f"only in docs/api.md: {sorted(set(docs) - set(live))};"
        f" only in /openapi.json: {sorted(set(live) - set(docs))}"
    )


def test_every_status_and_error_code_agree(spec):
    docs, live = documented(), described(spec)
    docs[ANY_OTHER] = {"*": set().union(*docs[ANY_OTHER].values())}  # codes only there
    mismatches = [
        f"{route}: docs/api.md {docs[route]} != /openapi.json {live[route]}"
        for route in sorted(set(docs) & set(live))
        if docs[route] != live[route]
    ]
    assert not mismatches, "\n".join(mismatches)


def test_the_table_is_read_as_written():
    """The parser itself: a row it could not read would make both tests vacuous."""
    docs = documented()
    assert docs["POST /api/bookings/reserve"]["409"] >= {"already_booked", "sold_out"}
    assert docs["GET /health"]["500"] == {"internal_error"}  # from the every-route row
    assert docs[ANY_OTHER] == {"404": {"not_found"}, "405": {"method_not_allowed"}}


DOCUMENTS = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]
REPO_PATH = re.compile(r"`((?:booking|tests|deploy|docs|bench|migrations|\.ci)/[\w./-]*)`")
LINK = re.compile(r"\]\(([^)#\s]+)")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_documents_point_only_to_files_in_the_repository(document):
    text = document.read_text()
    missing = [
        target
        for target in LINK.findall(text)
        if "://" not in target and not (document.parent / target).exists()
    ]
    missing += [path for path in REPO_PATH.findall(text) if not (ROOT / path).exists()]
    assert not missing, f"{document.name} names files that are not in the repository: {missing}"
