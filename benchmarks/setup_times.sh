#!/usr/bin/env bash
# Time the README's two set-up commands, each in a fresh clone and a fresh virtual environment
# (pip's download cache as the machine has it). Usage: bash benchmarks/setup_times.sh [WORKDIR]
# Prints one line per command; the test suite's own summary line follows the second.
set -u
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
unset NUMBA_CACHE_DIR
export XDG_CACHE_HOME="$work/cache"   # an empty kernel cache: the first run compiles
now() { date +%s.%N; }
for which in run test; do
    rm -rf "$work/venv-$which" "$work/src-$which"
    git clone -q "$repo" "$work/src-$which"
    python -m venv "$work/venv-$which"
    (
        export PATH="$work/venv-$which/bin:$PATH"
        cd "$work/src-$which"
        if [ "$which" = run ]; then
            s=$(now)
            pip install -q ".[demo]" >/dev/null 2>&1 && fastopt info >/dev/null \
                && fastopt check >/dev/null && fastopt bench --quick >/dev/null 2>&1 \
                && fastopt demo >/dev/null 2>&1
            echo "run it:  exit $?, $(echo "$(now) - $s" | bc) s"
        else
            s=$(now)
            bash ci/install.sh >/dev/null 2>&1
            m=$(now)
            bash ci/test.sh -q >"$work/test.txt" 2>&1
            echo "test it: exit $?, install $(echo "$m - $s" | bc) s, suite $(echo "$(now) - $m" | bc) s"
            tail -1 "$work/test.txt"
        fi
    )
done
