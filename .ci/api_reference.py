#!/usr/bin/env python3
"""Writes docs/api.md, the API reference, from the protos' comments (issue
34): each service with its RPCs, each message with its fields, each enum
with its values, in the order the files declare them.

  python3 .ci/api_reference.py           # rewrite docs/api.md
  python3 .ci/api_reference.py --check   # exit 1 if docs/api.md is stale

Needs only python3. The protos are the source; never edit docs/api.md.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "proto" / "chatbot" / "v1"
OUT = ROOT / "docs" / "api.md"

BLOCK = re.compile(r"(message|enum|service|oneof) (\w+) \{")
RPC = re.compile(r"rpc (\w+)\((\w+)\) returns \((stream )?([\w.]+)\);")
FIELD = re.compile(r"(repeated |optional )?(map<[^>]+>|[\w.]+) (\w+) = (\d+)( \[deprecated = true\])?;")
VALUE = re.compile(r"(\w+) = (\d+);")


def paragraphs(comment):
    """A comment's text: its lines joined, a blank comment line or a "- "
    list item starting a new line."""
    text = ""
    for line in comment:
        if not line:
            text += "\n\n"
        elif line.startswith("- ") and text:
            text += "\n" + line
        else:
            text += ("" if not text or text.endswith("\n") else " ") + line
    return text.strip()


def parse(path):
    """Top-level declarations of a file: (kind, name, doc, members)."""
    declarations = []
    stack = []
    comment = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line.startswith("//"):
            comment.append(line[2:].strip())
            continue
        doc = paragraphs(comment)
        comment = []
        block = BLOCK.match(line)
        if block:
            entry = {"kind": block.group(1), "name": block.group(2), "doc": doc, "members": []}
            if block.group(1) == "oneof" and stack:
                entry["members"] = stack[-1]["members"]  # a oneof's fields are its message's
                entry["oneof"] = True
            elif not stack:
                declarations.append(entry)
            else:
                stack[-1].setdefault("nested", []).append(entry)
            stack.append(entry)
            continue
        if line.startswith("}") and stack:
            stack.pop()
            continue
        if not stack:
            continue
        current = stack[-1]
        rpc = RPC.match(line)
        field = FIELD.match(line)
        value = VALUE.match(line)
        if rpc:
            stream = "stream " if rpc.group(3) else ""
            current["members"].append((rpc.group(1), f"{rpc.group(2)} → {stream}{rpc.group(4)}", doc))
        elif field and current["kind"] in ("message", "oneof"):
            label = (field.group(1) or "").strip()
            kind = f"{label} {field.group(2)}".strip()
            name = field.group(3)
            if current.get("oneof"):
                doc = f"(one of `{current['name']}`) {doc}"
            if field.group(5):
                name += " (deprecated)"
            current["members"].append((name, kind, doc))
        elif value and current["kind"] == "enum":
            current["members"].append((value.group(1), value.group(2), doc))
    return declarations


def cell(text):
    return text.replace("|", "\\|").replace("\n\n", "<br><br>").replace("\n", "<br>")


def render():
    lines = [
        "# API reference: chatbot.v1",
        "",
        "Generated from `proto/chatbot/v1/*.proto` by `.ci/api_reference.py`;",
        "CI fails when it is stale. The protos are the contract: this page only",
        "lays their comments out. Every RPC may also answer the cross-cutting codes",
        "its service notes; every field of a response message is output only.",
        "",
    ]
    files = sorted(PROTOS.glob("*.proto"), key=lambda p: (not p.name.endswith("_service.proto"), p.name))
    for path in files:
        lines += [f"## {path.name}", ""]
        for entry in parse(path):
            for item in [entry] + entry.get("nested", []):
                lines += section(item)
    return "\n".join(lines).rstrip() + "\n"


def section(entry):
    kind, name, doc, members = entry["kind"], entry["name"], entry["doc"], entry["members"]
    out = [f"### {kind} {name}", ""]
    if doc:
        out += [doc, ""]
    if not members:
        return out
    header = {
        "service": ("RPC", "Request → response"),
        "message": ("Field", "Type"),
        "enum": ("Value", "Number"),
    }[kind]
    out += [f"| {header[0]} | {header[1]} | Description |", "|---|---|---|"]
    out += [f"| `{m}` | `{cell(t)}` | {cell(d)} |" for m, t, d in members]
    return out + [""]


def main():
    text = render()
    if "--check" in sys.argv[1:]:
        if not OUT.exists() or OUT.read_text() != text:
            print("api_reference: docs/api.md is stale: run python3 .ci/api_reference.py", file=sys.stderr)
            sys.exit(1)
        print("api_reference: docs/api.md matches the protos")
        return
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"api_reference: wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
