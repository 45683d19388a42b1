#!/usr/bin/env bash
# The CUDA tests and GPU timings in one run, for a machine with a GPU and a CUDA build of torch
# (CPU-only CI skips the CUDA tests; this is where they run). Logs go to $OUT (default
# gpu-checks/); each step has its own time limit so that one hang does not hide the rest.
#
#   bash benchmarks/gpu_checks.sh [STEP...]    (default: every step; names as in the log)
set -uo pipefail
only=" $* "
out=${OUT:-gpu-checks}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS COMMAND...: run it, log to $out/NAME.log, note its exit status
    local name=$1 limit=$2
    shift 2
    if [ "$only" != "  " ] && [[ "$only" != *" $name "* ]]; then return; fi
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
    echo "== $name exit ${PIPESTATUS[0]}" | tee -a "$out/summary.txt"
}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
step cuda_tests 200 python3 -m pytest -q -p no:cacheprovider -k "cuda or graph" \
    tests/test_fast_paths.py tests/test_lockstep.py tests/test_similarity.py tests/test_control.py \
    tests/test_glm.py tests/test_nsm_cca.py tests/test_refh.py tests/test_reservoir.py
step decoding_cuda 200 python3 benchmarks/decoding_cuda.py --bins 1500
step cuda_graphs 90 python3 benchmarks/cuda_graphs.py --steps 1500 --warmup 200
step learner_steps 150 python3 benchmarks/learner_steps.py --devices cuda --seconds 0.2
step lockstep_replay 120 python3 benchmarks/lockstep_replay.py --samples 4000 --batches 1,8,64
# the closed loop on two pinned cores of this machine (the 2-core target), learner on
# the CPU, then with the learner on the GPU (one captured graph and one copy back per sample)
step loop_cpu 60 taskset -c 0,1 python3 benchmarks/loopback_latency.py --seconds 8 \
    --learner "sm:n_components=4,device=cpu"
step loop_cuda 60 taskset -c 0,1 python3 benchmarks/loopback_latency.py --seconds 8 \
    --only streamlab --learner "sm:n_components=4,device=cuda"
cat "$out/summary.txt"
