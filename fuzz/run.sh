#!/usr/bin/env bash
# Runs each fuzz target for SECONDS, one after another, and prints per target
# the executions, exec/s, coverage (cov: edges, ft: features), corpus size
# and crashes. Exits non-zero when any target crashed, timed out or ran out
# of memory (after running the others).
#
#   fuzz/run.sh SECONDS [TARGET...]     (targets: token_response error_response file_cache)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). It runs on stable Rust with
# RUSTC_BOOTSTRAP=1, which lets cargo-fuzz pass its nightly-only flags
# (-Zsanitizer=address and friends). Debug assertions (and so overflow checks)
# are on (-a).
#
# Each target starts from a scratch copy of its committed seeds
# (corpus/<target>/) and regression inputs (regressions/<target>/), so the
# committed corpus never grows; set KEEP_CORPUS=1 to keep the scratch folders
# (their paths are printed). Crashing inputs go to artifacts/<target>/.
# Issues listed in KNOWN_OPEN (src/lib.rs) are tolerated unless FUZZ_STRICT=1.
# Extra libFuzzer flags can be given in FUZZ_FLAGS.
set -euo pipefail

seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "SECONDS must be a whole number: $seconds" >&2; exit 2; }
shift
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(token_response error_response file_cache)

cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1

cargo fuzz --version >/dev/null 2>&1 || {
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
}
echo "== building ${targets[*]} (cargo fuzz build -a, RUSTC_BOOTSTRAP=1)"
for target in "${targets[@]}"; do
    cargo fuzz build -a "$target"
done

scratch_root=$(mktemp -d "${TMPDIR:-/tmp}/tokenkeeper-fuzz.XXXXXX")
if [[ -z ${KEEP_CORPUS:-} ]]; then
    trap 'rm -rf "$scratch_root"' EXIT
fi

summary=()
failed=0
for target in "${targets[@]}"; do
    corpus="$scratch_root/$target"
    log="$scratch_root/$target.log"
    mkdir -p "$corpus" "artifacts/$target"
    seeds=$(find "corpus/$target" -type f | wc -l)
    cp corpus/"$target"/* "$corpus"/
    if [[ -d regressions/$target ]]; then
        cp regressions/"$target"/* "$corpus"/ 2>/dev/null || true
    fi
    before=$(find "artifacts/$target" -type f | wc -l)
    echo "== $target: ${seconds}s from $seeds seeds (log: $log)"
    status=0
    # shellcheck disable=SC2086 # FUZZ_FLAGS is a list of flags
    cargo fuzz run -a "$target" "$corpus" -- \
        -max_total_time="$seconds" \
        -dict=oauth2.dict \
        -max_len=8192 \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        ${FUZZ_FLAGS:-} >"$log" 2>&1 || status=$?
    after=$(find "artifacts/$target" -type f | wc -l)
    new_artifacts=$((after - before))

    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -1; }
    execs=$(stat number_of_executed_units)
    per_sec=$(stat average_exec_per_sec)
    rss=$(stat peak_rss_mb)
    # The last status line: "#N DONE cov: X ft: Y corp: F/Bb ..." or "#N pulse ...".
    last=$(grep -E '^#[0-9]+[[:space:]]+[A-Z]+[[:space:]]+cov:' "$log" | tail -1 || true)
    inited=$(grep -E '^#[0-9]+[[:space:]]+INITED[[:space:]]+cov:' "$log" | tail -1 || true)
    seed_cov=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\).*/\1\/\2/p' <<<"$inited")
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([^ ]*\).*/\1/p' <<<"$last")
    files=$(find "$corpus" -type f | wc -l)

    if [[ $status -ne 0 || $new_artifacts -gt 0 ]]; then
        failed=1
        result="FAILED (exit $status, $new_artifacts new artifact(s) in fuzz/artifacts/$target/)"
        grep -E -A3 "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | head -20 || true
    else
        result="ok"
    fi
    line="$target: ${seconds}s, ${execs:-?} execs, ${per_sec:-?} exec/s, cov ${cov:-?}, ft ${ft:-?} (seeds alone: cov/ft ${seed_cov:-?}), corpus ${corp:-?} in memory ($files files on disk, $seeds seeds), peak RSS ${rss:-?} MB, $result"
    echo "$line"
    summary+=("$line")
done

echo
echo "== summary (RUSTC_BOOTSTRAP=1 cargo fuzz run -a, $(rustc --version))"
printf '%s\n' "${summary[@]}"
if [[ -n ${KEEP_CORPUS:-} ]]; then
    echo "scratch corpora and logs kept in $scratch_root"
fi
exit "$failed"
