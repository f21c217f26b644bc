#!/usr/bin/env bash
# mypy sees the packages under their installed names (edgestream.store, ...) through a symlink farm,
# because the repository folders are mapped onto those names only at install time.
set -euo pipefail
venv=${1:-.venv}
root=$(pwd)
farm=.build/typecheck/edgestream
mkdir -p "$farm"
for pkg in edge store gateway; do
  ln -sfn "$root/$pkg" "$farm/$pkg"
done
cd .build/typecheck
# store/ is strict (pyproject override); edge/ and gateway/ are checked with the default rules.
"$root/$venv/bin/mypy" --config-file "$root/pyproject.toml" -p edgestream.store -p edgestream.edge -p edgestream.gateway
