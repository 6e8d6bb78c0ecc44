#!/usr/bin/env bash
# Run `.ci/run` on fresh clones of one commit, one run after another, alternating a private (0700)
# folder and a public (0755) one: CI clones into a folder we do not choose, and a flaky test shows up
# only across runs (issue 26: "five green in a row in a 0700 folder and five in a public one").
#
#   scripts/ci-soak.sh [COMMIT] [RUNS] [FIRST_NUMBER]      defaults: HEAD 10 1
#
# Private runs go under $HOME/ci-soak (made 0700), public ones under $NCLUST_SOAK_PUBLIC (default
# /srv/ci-soak, made 0755). Odd-numbered runs are private, even ones public. Each run's log stays in
# its folder (ci.log; the clone is removed when the run is green); one line per run, plus the
# `ci:` timing lines, goes to $HOME/ci-soak/summary.txt. Exits 1 after the first red run.
# Run it on an otherwise idle machine: the suite forks clusters and times nothing but deadlines.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$repo" rev-parse "${1:-HEAD}")
runs=${2:-10}
first=${3:-1}
private_base=$HOME/ci-soak
public_base=${NCLUST_SOAK_PUBLIC:-/srv/ci-soak}
mkdir -p "$private_base" "$public_base"
chmod 0700 "$private_base"
chmod 0755 "$public_base"
summary=$private_base/summary.txt

for i in $(seq "$first" $(( first + runs - 1 ))); do
  if (( i % 2 )); then base=$private_base mode=0700; else base=$public_base mode=0755; fi
  dir=$(mktemp -d "$base/run$i.XXXXXX")
  chmod "$mode" "$dir"
  git clone -q "$repo" "$dir/repo"
  git -C "$dir/repo" checkout -q "$commit"
  t0=$(date +%s)
  rc=0
  (cd "$dir/repo" && CI=true bash .ci/run) > "$dir/ci.log" 2>&1 || rc=$?
  {
    echo "run $i mode $mode dir $dir commit ${commit:0:7} rc $rc seconds $(( $(date +%s) - t0 ))"
    grep -E '^ci: Node|^ℹ (pass|fail|skipped)' "$dir/ci.log" | sed 's/^/  /' || true
  } >> "$summary"
  if (( rc != 0 )); then
    echo "ci-soak: run $i is red (exit $rc): $dir/ci.log" >&2
    exit 1
  fi
  rm -rf "$dir/repo"
done
echo "ci-soak: $runs runs of ${commit:0:7} green; $summary"
