#!/usr/bin/env bash
# GPU smoke test of the distributed paths: 2-3 steps (iterations) of every iterative trainer (aihf, rlhf,
# self-play-aihf, spin) and of direct-aihf on SmolLM2-135M-Instruct, under DDP, DeepSpeed ZeRO-2,
# ZeRO-3, FSDP2 and vLLM colocate (DDP + use_vllm; the methods that sample). Every cell is one
# `accelerate launch` under a timeout; one table of pass / fail and seconds per step comes at the end
# (also OUT/summary.md). Not part of the test suite: it needs GPUs (and for some cells extras).
#
# Usage (from the repository root):
#   bash benchmarks/gpu_smoke.sh [OUT]                    # every cell, all GPUs of this machine
#   NPROC=2 bash benchmarks/gpu_smoke.sh                  # processes per cell (default: the GPUs)
#   SETUPS="ddp fsdp2" TRAINERS="aihf spin" bash benchmarks/gpu_smoke.sh   # a subset of the grid
#   CELL_TIMEOUT=900 bash benchmarks/gpu_smoke.sh         # seconds per cell (default 600)
#   MODEL=/path/to/model bash benchmarks/gpu_smoke.sh     # default: `aihf lm get-model smollm2-135m-instruct`
#   bash benchmarks/gpu_smoke.sh --cpu [OUT]              # dry run, no GPU: one cell (DDP, aihf) with two
#                                                         # CPU processes on a tiny model (about a minute)
# Setups: ddp zero2 zero3 fsdp2 vllm. Needs `pip install 'aihf[lm]'`, plus 'aihf[deepspeed]' for the ZeRO
# cells and 'aihf[vllm]' for the vLLM cells (a cell whose extra is missing fails with that line).
# Status: pass (exit 0, OUT/policy saved, metrics logged), fail (see the cell's log.txt), timeout, or
# refused (a combination the trainers refuse by design: Self-Play AIHF / SPIN under ZeRO-3).
# s/step is the last rate of the run's progress bar (the RL stage for rlhf); wall s includes start-up.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CPU=0
if [[ "${1:-}" == "--cpu" ]]; then
    CPU=1
    shift
fi
OUT="$(realpath -m "${1:-runs/gpu_smoke}")"
CELL_TIMEOUT="${CELL_TIMEOUT:-600}"
DATA="$ROOT/src/aihf/data/lm/smollm2"
mkdir -p "$OUT/data"
for name in demos prefs prompts; do  # a few rows suffice for 2-3 steps; tokenising all would dominate
    head -n 64 "$DATA/$name.jsonl" >"$OUT/data/$name.jsonl"
done

if [[ $CPU == 1 ]]; then
    export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS=1
    SETUPS="ddp"
    TRAINERS="aihf"
    NPROC=2
    python -c "from aihf.lm.tiny import save_tiny_models; save_tiny_models('$OUT/tiny')" || exit 1
    MODEL="$OUT/tiny/policy"
    REWARD="$OUT/tiny/reward_model"
    PRECISION=no
    BF16=false
else
    SETUPS="${SETUPS:-ddp zero2 zero3 fsdp2 vllm}"
    TRAINERS="${TRAINERS:-aihf rlhf self-play-aihf spin direct-aihf}"
    NPROC="${NPROC:-$(nvidia-smi -L 2>/dev/null | wc -l)}"
    if [[ "$NPROC" -lt 1 ]]; then
        echo "gpu_smoke: no GPU found (nvidia-smi -L); use --cpu for the dry run" >&2
        exit 2
    fi
    MODEL="${MODEL:-$(aihf lm get-model smollm2-135m-instruct)}" || exit 1
    REWARD="$MODEL"  # a one-label score head on the same model
    PRECISION=bf16
    BF16=true
fi

# Small settings: every trainer's, then its family's (a config file may hold only its trainer's fields).
# Lengths fit the tiny model's 128 positions too (SmolLM2's prompts keep their end, next to the answer).
cell_config() {  # TRAINER SETUP
    printf 'per_device_train_batch_size: 2\nmax_length: 112\nmax_prompt_length: 80\nbf16: %s\nreport_to: none\n' "$BF16"
    case "$1" in
        aihf | rlhf)
            printf 'prompt_batch_size: 2\nnum_generations: 2\nmax_completion_length: 16\ngeneration_batch_size: 8\n'
            printf 'sft_steps: 2\nreward_warmup_steps: 2\n'
            ;;
        self-play-aihf | spin) printf 'max_completion_length: 16\ngeneration_batch_size: 8\nsteps_per_iteration: 1\n' ;;
    esac
    if [[ $2 == vllm ]]; then
        printf 'use_vllm: true\nvllm_mode: colocate\nvllm_gpu_memory_utilization: 0.3\n'
    fi
}

accelerate_config() {
    case "$1" in
        ddp | vllm) echo "$ROOT/configs/accelerate/ddp.yaml" ;;
        zero2) echo "$ROOT/configs/accelerate/deepspeed_zero2.yaml" ;;
        zero3) echo "$ROOT/configs/accelerate/deepspeed_zero3.yaml" ;;
        fsdp2) echo "$ROOT/configs/accelerate/fsdp2.yaml" ;;
        *) return 1 ;;
    esac
}

ROWS=()
PORT=29600
for setup in $SETUPS; do
    config_file="$(accelerate_config "$setup")" || {
        echo "gpu_smoke: unknown setup '$setup' (ddp zero2 zero3 fsdp2 vllm)" >&2
        exit 2
    }
    for trainer in $TRAINERS; do
        if [[ $setup == vllm && $trainer == direct-aihf ]]; then
            ROWS+=("| $setup | $trainer | n/a (does not sample) | | | |")
            continue
        fi
        cell="$OUT/$setup/$trainer"
        rm -rf "$cell"
        mkdir -p "$cell"
        cell_config "$trainer" "$setup" >"$cell/config.yaml"
        steps=2
        length=(--max-iterations 2)
        if [[ $trainer == direct-aihf ]]; then
            steps=3
            length=(--max-steps 3)
        fi
        data=(--demos "$OUT/data/demos.jsonl")
        [[ $trainer != spin ]] && data+=(--prefs "$OUT/data/prefs.jsonl")
        [[ $trainer == aihf || $trainer == rlhf ]] && data+=(--prompts "$OUT/data/prompts.jsonl" --reward-model "$REWARD")
        PORT=$((PORT + 1))
        start=$(date +%s)
        timeout --kill-after=30 "$CELL_TIMEOUT" python -m accelerate.commands.launch \
            --config_file "$config_file" --num_processes "$NPROC" --num_machines 1 \
            --mixed_precision "$PRECISION" --main_process_port "$PORT" \
            -m aihf lm train --trainer "$trainer" --model_name_or_path "$MODEL" "${data[@]}" \
            --config "$cell/config.yaml" "${length[@]}" --output_dir "$cell/out" >"$cell/log.txt" 2>&1
        code=$?
        wall=$(($(date +%s) - start))
        logged=0
        [[ -f "$cell/out/metrics.jsonl" ]] && logged=$(wc -l <"$cell/out/metrics.jsonl")
        rate=$(tr '\r' '\n' <"$cell/log.txt" | grep -E "^$trainer: " | grep -oE '[0-9.]+(s/it|it/s)' | tail -n 1)
        if [[ $rate == *it/s ]]; then
            rate=$(awk -v r="${rate%it/s}" 'BEGIN { if (r > 0) printf "%.2f", 1 / r }')
        else
            rate="${rate%s/it}"
        fi
        if [[ $code == 0 && -f "$cell/out/policy/config.json" && $logged -ge 1 ]]; then
            status=pass
        elif [[ $code == 124 || $code == 137 ]]; then
            status="timeout (${CELL_TIMEOUT} s)"
        elif [[ $code == 2 ]] && grep -q "not supported under ZeRO-3" "$cell/log.txt"; then
            status="refused (by design)"
        else
            status="fail (exit $code: $setup/$trainer/log.txt)"
        fi
        echo "[gpu_smoke] $setup $trainer: $status, ${wall} s" >&2
        ROWS+=("| $setup | $trainer | $status | $steps | ${rate:--} | $wall |")
    done
done

{
    echo "GPU smoke: $NPROC process(es) per cell, model $MODEL"
    echo
    echo "| setup | trainer | status | steps | s/step | wall s |"
    echo "|---|---|---|---:|---:|---:|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT/summary.md"
! grep -qE '\| (fail|timeout)' "$OUT/summary.md"
