#!/usr/bin/env bash
# Run fuzz targets one after the other, at low priority, on one core.
#
#   fuzz/run.sh RUNS SECONDS [TARGET...]
#
# Each target stops after RUNS inputs or SECONDS seconds, whichever comes
# first (all targets when none is named). Logs go to fuzz/logs/<target>.log;
# the last line of each is libFuzzer's final statistics.
set -u
runs=${1:?usage: fuzz/run.sh RUNS SECONDS [TARGET...]}
seconds=${2:?usage: fuzz/run.sh RUNS SECONDS [TARGET...]}
shift 2
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frames http handshake deflate json protobuf token config)
fi
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python}
mkdir -p "$here/logs"
for target in "${targets[@]}"; do
    log="$here/logs/$target.log"
    echo "$(date -u +%FT%TZ) $target: start (runs=$runs, max ${seconds}s)" | tee -a "$here/logs/summary.txt"
    nice -n 10 "$python" "$here/fuzz_$target.py" -atheris_runs="$runs" \
        -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1
    status=$?
    executed=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | tail -1)
    echo "$(date -u +%FT%TZ) $target: exit $status, $executed, $rate" | tee -a "$here/logs/summary.txt"
done
