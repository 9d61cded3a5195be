#!/usr/bin/env bash
# The paired SE-ResNet-56 vs ResNet-56 study of issue 11 (docs/analysis.md, "Does SE help?").
#
#   bash benchmarks/study_se_vs_plain.sh [OUT] [SEEDS]     # default OUT ../studies/cmp56, SEEDS 3
#
# Starts `senet compare` in the background under nice, two runs at a time with one thread each
# (SE and plain of one seed side by side, so their time ratio is measured under the same load), from
# a frozen copy of src/ (edits to the checkout while it runs do not reach the runs it starts later).
# Resumable: run the same command again after a stop; finished runs are skipped, an interrupted one
# resumes from its last checkpoint. Finished runs copied from docs/results/cmp56 (metrics.jsonl and
# config.yaml) count as finished. Progress: OUT/compare.log, `senet compare ... --summary`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-../studies/cmp56}")
SEEDS=${2:-3}
DATA=$(realpath -m "${SENET_DATASETS:-../shared/datasets}/cifar10-jpeg")
mkdir -p "$OUT"
if [ -d docs/results/cmp56 ]; then  # results of earlier sessions: finished runs are not trained again
    for run in docs/results/cmp56/*/seed*/; do
        dest="$OUT/${run#docs/results/cmp56/}"
        [ -f "$dest/metrics.jsonl" ] || { mkdir -p "$dest"; cp "$run"/* "$dest"/; }
    done
fi
CODE="$OUT/.code"
rm -rf "$CODE" && mkdir -p "$CODE" && cp -r src "$CODE/"
PYTHONPATH="$CODE/src" OMP_NUM_THREADS=1 nohup nice -n 19 python -m senet compare \
    --recipe cifar10-quick --model se_resnet56 --seeds "$SEEDS" \
    --epochs 6 --warmup-epochs 1.2 --channels-last --amp none --threads 1 --jobs 2 \
    --data-dir "$DATA" --out "$OUT" >> "$OUT/compare.log" 2>&1 &
echo "study started in the background (pid $!): $OUT, log $OUT/compare.log"
