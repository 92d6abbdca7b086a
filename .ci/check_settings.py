#!/usr/bin/env python3
"""Keeps the configuration table (docs/configuration.md) equal to what the server accepts
(issue 34): every setting of src/config/ (`#[arg(long, env = ...)]`) has a
row with its flag and environment variable, every row names a setting, a
setting's default in the code is the row's default, and a setting the code
checks in a range (its bound tables) gives that range ("From 1 to 86400").

Exits 1 naming each difference. Run from anywhere; needs only python3.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
# The settings and their checks, in every file of src/config/.
CONFIG = "\n".join(f.read_text() for f in sorted((ROOT / "src" / "config").glob("*.rs")))
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()


def code_settings():
    """(flag, env, default or None) of each setting, in source order."""
    settings = []
    for attribute, field in re.findall(r"#\[arg\(([^\]]*?)\)\]\s*pub (\w+):", CONFIG, re.S):
        env = re.search(r'env\s*=\s*"(\w+)"', attribute)
        if not env or not re.search(r"\blong\b", attribute):
            continue
        default = re.search(r'default_value_t\s*=\s*([^,\n]+?)\s*(?:,|$)', attribute)
        if default:
            value = default.group(1).strip().replace("_", "")
            if "::" in value:  # an enum's variant, as clap shows it
                value = value.split("::")[-1].lower()
            elif re.fullmatch(r"[\d\s*+]+", value):  # arithmetic of literals
                value = str(eval(value))  # noqa: S307 (digits and operators only)
            elif value.endswith(")"):  # computed at start: the table describes it
                value = None
        else:
            default = re.search(r'default_value\s*=\s*"([^"]*)"', attribute)
            value = default.group(1) if default else None
        settings.append(("--" + field.replace("_", "-"), env.group(1), value))
    return settings


CONSTANTS = {
    "MAX_INTERVAL_SECS": "24 * 3600",
    "MAX_TIMEOUT_MS": str(2**31 - 1),
    "u32::MAX.into()": str(2**32 - 1),
}


def number(expression):
    """A bound as the code writes it (literals, * and the constants above)."""
    expression = expression.strip().replace("_", "")
    for name, value in CONSTANTS.items():
        expression = expression.replace(name.replace("_", ""), f"({value})")
    if not re.fullmatch(r"[\d\s*+()\-]+", expression):
        return None
    return eval(expression)  # noqa: S307 (digits, operators and parentheses only)


def code_bounds():
    """{env: (least, most)} of the settings src/config/ checks in ranges:
    tuples ("NAME", value, least, most) in its bound tables."""
    bounds = {}
    for name, least, most in re.findall(
        r'\(\s*"([A-Z_]+)",\s*[^,]+?,\s*([^,()]+?),\s*([^()]+?(?:\(\))?(?:\.into\(\))?),?\s*\)', CONFIG
    ):
        least, most = number(least), number(most)
        if least is not None and most is not None:
            bounds[name] = (least, most)
    return bounds


def readme_rows():
    section = CONFIGURATION.split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`--"):
            flag, env, default = (cell.split("`")[1] if "`" in cell else cell for cell in cells[:3])
            rows[env] = (flag, default, cells[3])
    return rows


def main():
    errors = []
    rows = readme_rows()
    seen = set()
    for flag, env, default in code_settings():
        seen.add(env)
        if env not in rows:
            errors.append(f"{env} ({flag}) has no row in the configuration table (docs/configuration.md)")
            continue
        row_flag, row_default, _ = rows[env]
        if row_flag != flag:
            errors.append(f"{env}: docs/configuration.md says {row_flag}, the server takes {flag}")
        if default is not None and row_default != default:
            errors.append(f"{env}: its default is {row_default!r}, the code's {default!r}")
    for env, (least, most) in code_bounds().items():
        meaning = rows.get(env, ("", "", ""))[2].replace(",", "")
        if f"{least} to {most}" not in meaning:
            errors.append(f"{env}: docs/configuration.md does not give its range, {least} to {most}")
    for env in sorted(set(rows) - seen):
        errors.append(f"the configuration table (docs/configuration.md) names {env}, which the server does not take")
    for error in errors:
        print(error, file=sys.stderr)
    if errors:
        print(f"check_settings: {len(errors)} differences", file=sys.stderr)
        sys.exit(1)
    print(
        f"check_settings: docs/configuration.md's table matches the server's {len(seen)} settings "
        f"and their {len(code_bounds())} ranges"
    )


if __name__ == "__main__":
    main()
