#!/bin/bash
# OpenVINO int8 of EfficientNet-Lite0 with and without its first 3 convs float, interleaved:
# each artifact a fresh targets/bench.py process (1 thread, CPU 0, batch 1, 30 warm-up + 200 runs),
# ROUNDS rounds (default 10), then the median p50 of each and its speed-up over fp32.
#
#   .venv/bin/edgecompress export zoo:efficientnet-lite0 -f openvino --int8 --float-first 0 \
#       --calib 'LABELS[:300]' --eval 'LABELS[300:]' --out ALL      # every layer int8
#   .venv/bin/edgecompress export zoo:efficientnet-lite0 -f openvino --int8 \
#       --calib 'LABELS[:300]' --eval 'LABELS[300:]' --out FF3      # the zoo default: first 3 float
#   benchmarks/openvino_float_first.sh ALL FF3 [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
all=$1 ff3=$2 rounds=${3:-10}
log=$(mktemp)
for r in $(seq "$rounds"); do
  for spec in "fp32|$all/efficientnet-lite0-fp32.xml|--precision-hint f32" \
              "int8-all|$all/efficientnet-lite0-int8.xml|" "int8-first3float|$ff3/efficientnet-lite0-int8.xml|"; do
    IFS='|' read -r name path extra <<< "$spec"
    # shellcheck disable=SC2086  # extra is zero or two words
    p50=$(.venv/bin/python targets/bench.py "$path" --runtime openvino --threads 1 --cpus 0 --warmup 30 \
          --runs 200 --input-shape 1,3,224,224 $extra 2>/dev/null | tail -1 |
          .venv/bin/python -c "import json, sys; print(json.load(sys.stdin)['latency_ms']['1']['p50'])")
    echo "$r $name $p50" | tee -a "$log"
  done
done
.venv/bin/python - "$log" <<'PY'
import collections, statistics, sys
d = collections.defaultdict(list)
for line in open(sys.argv[1]):
    _, name, v = line.split()
    d[name].append(float(v))
m = {k: statistics.median(v) for k, v in d.items()}
print("| OpenVINO artifact | rounds | median p50 ms | speed-up vs fp32 |\n|---|---|---|---|")
for k, v in m.items():
    print(f"| {k} | {len(d[k])} | {v:.2f} | {m['fp32'] / v:.2f}x |")
PY
rm -f "$log"
