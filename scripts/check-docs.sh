#!/usr/bin/env bash
# The documentation matches the code:
# 1. the generated tables of docs/kernels.md (between the BEGIN/END GENERATED markers) equal
#    `fusebert kernels markdown` (ptxas resources of the shipped PTX, the launch schedule);
# 2. every relative link in README.md, CHANGELOG.md and docs/*.md points to a file that exists;
# 3. every docs/*.md that the code or the scripts cite exists.
# --write regenerates the tables in place instead of comparing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# --workspace: the feature resolution `cargo test --workspace` uses, so the build is shared
cargo build --locked --quiet --profile test --workspace --bin fusebert
tables="$(mktemp)"
trap 'rm -f "$tables"' EXIT
target/debug/fusebert kernels markdown >"$tables"
python3 - "$tables" "${1:-}" <<'PY'
import os, re, sys
tables, mode = open(sys.argv[1]).read(), sys.argv[2]
path = "docs/kernels.md"
begin, end = "<!-- BEGIN GENERATED: fusebert kernels markdown -->", "<!-- END GENERATED -->"
text = open(path).read()
if begin not in text or end not in text:
    sys.exit(f"{path}: the markers {begin} ... {end} are missing")
a, b = text.index(begin) + len(begin), text.index(end)
want = text[:a] + "\n" + tables + text[b:]
if text != want:
    if mode == "--write":
        open(path, "w").write(want)
        print(f"{path}: tables regenerated")
    else:
        sys.exit(f"{path}: the generated tables are stale: run scripts/check-docs.sh --write and commit")
bad = []
docs = ["README.md", "CHANGELOG.md"] + ["docs/" + f for f in sorted(os.listdir("docs")) if f.endswith(".md")]
for d in docs:
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", open(d).read()):
        if re.match(r"[a-z]+:", link):
            continue
        if not os.path.exists(os.path.normpath(os.path.join(os.path.dirname(d), link))):
            bad.append(f"{d}: link to {link}, which does not exist")
for dirpath, _, files in os.walk("."):
    if dirpath.startswith(("./target", "./.git", "./.venv-cuda", "./.venv-clients")):
        continue
    for f in files:
        if f.endswith((".rs", ".sh", ".cu", ".cuh", ".toml")):
            p = os.path.join(dirpath, f)
            for cited in set(re.findall(r"docs/[a-z0-9-]+\.md", open(p, errors="replace").read())):
                if not os.path.exists(cited):
                    bad.append(f"{p}: cites {cited}, which does not exist")
if bad:
    sys.exit("\n".join(bad))
print(f"docs: tables current, {len(docs)} documents' links and the code's citations resolve")
PY
