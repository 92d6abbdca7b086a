#!/usr/bin/env python3
"""The contract's documentation rules, checked on proto/ (issue 34):

- every RPC's comment says which codes it answers ("Errors: ...");
- every service's comment carries the cross-cutting codes ("Cross-cutting:");
- every field of a request or resource message (and of its oneofs) starts
  its comment with "Required", "Optional" or "Output only" (a response
  message's fields are output only, as each service's comment says).

Exits 1 naming each violation. Run from anywhere; needs only python3.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "proto"
LABEL = re.compile(r"(Required|Optional|Output only)\b")
FIELD = re.compile(r"(repeated |optional |map<[^>]+> )?[\w.]+ (\w+) = \d+")
BLOCK = re.compile(r"(message|enum|service|oneof) (\w+)")


def problems(path):
    comment = []
    blocks = []  # (kind, name) of the enclosing message/enum/service/oneof
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("//"):
            comment.append(line[2:].strip())
            continue
        text = " ".join(comment)
        where = f"{path.relative_to(ROOT.parent)}:{number}"
        rpc = re.match(r"rpc (\w+)\(", line)
        if rpc and "Errors:" not in text:
            yield f"{where}: rpc {rpc.group(1)} does not list its codes (Errors: ...)"
        block = BLOCK.match(line)
        if block and block.group(1) == "service" and "Cross-cutting:" not in text:
            yield f"{where}: service {block.group(2)} does not note the cross-cutting codes"
        field = FIELD.match(line)
        if field and blocks and blocks[-1][0] in ("message", "oneof"):
            message = next(name for kind, name in reversed(blocks) if kind == "message")
            if not message.endswith("Response") and not LABEL.match(text):
                yield (
                    f"{where}: {message}.{field.group(2)} does not start its comment "
                    "with Required, Optional or Output only"
                )
        if block:
            blocks.append((block.group(1), block.group(2)))
        if line.startswith("}") and blocks:
            blocks.pop()
        comment = []


def main():
    found = [p for path in sorted(ROOT.rglob("*.proto")) for p in problems(path)]
    for problem in found:
        print(problem, file=sys.stderr)
    if found:
        print(f"proto_docs: {len(found)} problems", file=sys.stderr)
        sys.exit(1)
    print("proto_docs: every RPC lists its codes and every field its kind")


if __name__ == "__main__":
    main()
