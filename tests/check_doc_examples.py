#!/usr/bin/env python3
"""Checks that every code block marked `<!-- example: FILE -->` in docs/*.md equals FILE."""
import pathlib, re, sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
bad = 0
count = 0
for doc in sorted((root / "docs").glob("*.md")):
    text = doc.read_text()
    for m in re.finditer(r"<!-- example: (\S+) -->\n```[a-z]*\n(.*?)```\n", text, re.S):
        count += 1
        path = root / m.group(1)
        if not path.exists() or path.read_text() != m.group(2):
            print(f"{doc.name}: the example {m.group(1)} differs from the file")
            bad += 1
if count == 0:
    print("no examples found")
    sys.exit(1)
print(f"{count} examples checked, {bad} differ")
sys.exit(1 if bad else 0)
