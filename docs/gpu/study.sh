#!/usr/bin/env bash
# GPU check for issue 4: one coordinator process and one worker process run a
# 5-trial study (5 epochs each, full data, TPE + median pruning) on cuda:0.
set -uo pipefail
cd "$(dirname "$0")/.."
G=.gpu
TL=$(python3 -c 'import torch,os;print(os.path.dirname(torch.__file__))')/lib
export LD_LIBRARY_PATH=$TL:$TL/../../nvidia/cu13/lib
export MNIST_NO_PROGRESS=1
A=http://127.0.0.1:50551
{
nvidia-smi -L
$G/mnist-coordinator --listen 127.0.0.1:50551 --db /tmp/gpu-study.db --data-dir $G/mnist > /tmp/coord.log 2>&1 &
CPID=$!
sleep 3
$G/mnistctl --coordinator $A study create gpu5 --n-trials 5 --epochs 5
t0=$(date +%s.%N)
$G/mnist-worker --coordinator $A --devices cuda:0 --data-dir $G/mnist --study gpu5 --exit-when-idle --work-dir /tmp/gpu-work > /tmp/worker.log 2>&1
rc=$?
t1=$(date +%s.%N)
echo "worker exit $rc"
python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'5 trials in {s:.1f} s = {5*60/s:.2f} trials per minute')" $t0 $t1
$G/mnistctl --coordinator $A study trials gpu5
$G/mnistctl --coordinator $A study best gpu5 -o json
$G/mnistctl --coordinator $A workers
tail -n 30 /tmp/worker.log
kill $CPID
} 2>&1 | tee $OUT/study.log
cp /tmp/worker.log $OUT/worker.log 2>/dev/null; cp /tmp/coord.log $OUT/coord.log 2>/dev/null
