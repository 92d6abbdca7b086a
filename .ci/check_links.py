#!/usr/bin/env python3
"""Every relative link of the project's Markdown pages leads somewhere: the
file exists and, for a `#fragment` into a Markdown page, that page has the
heading (GitHub's anchor of it). Links inside code blocks and to the web
are not checked. Exits 1 naming each broken link; needs only python3.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = ["README.md", "CONTRIBUTING.md", "BENCHMARKS.md", "SECURITY.md", "CHANGELOG.md",
         "deploy/README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]


def outside_code(path):
    code = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            code = not code
        elif not code:
            yield number, line


def anchor(title):
    """GitHub's anchor of a heading: lowercase, punctuation dropped, spaces as '-'."""
    title = re.sub(r"[`*]", "", title.strip().lower())
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def anchors(path):
    return {anchor(line.lstrip("#")) for _, line in outside_code(path) if re.match(r"#+ ", line)}


def main():
    broken = []
    for page in PAGES:
        path = ROOT / page
        for number, line in outside_code(path):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if target.startswith(("http://", "https://", "mailto:")):
                    continue
                file, _, fragment = target.partition("#")
                linked = (path.parent / file).resolve() if file else path
                if not linked.exists():
                    broken.append(f"{page}:{number}: {target}: no such file")
                elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                    broken.append(f"{page}:{number}: {target}: no such heading")
    for link in broken:
        print(link, file=sys.stderr)
    if broken:
        print(f"check_links: {len(broken)} broken links", file=sys.stderr)
        sys.exit(1)
    print(f"check_links: every relative link of {len(PAGES)} pages leads somewhere")


if __name__ == "__main__":
    main()
