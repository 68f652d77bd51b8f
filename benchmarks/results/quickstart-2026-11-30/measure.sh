#!/usr/bin/env bash
# quiet-machine measurements: threads bench, then the README quickstart alone and beside one busy loop
cd /work/main && . .venv/bin/activate
unset OMP_NUM_THREADS OMP_WAIT_POLICY
export PYTHONPATH=/work/main/src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 BERTLOTTERY_GLUE_DIR=/work/shared/data/glue
echo "threads start $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
python benchmarks/bench_threads.py > /work/bench/threads.log 2>&1
echo "threads done $(date +%T)"
rm -rf /work/bench/qs-idle /work/bench/qs-busy
s=$(date +%s); echo "idle start $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
bertlottery run configs/quickstart.yaml --run-dir /work/bench/qs-idle --no-progress > /work/bench/qs-idle.log 2>&1
echo "idle wall $(( $(date +%s) - s )) s"
python3 -c "while True: pass" & C=$!
s=$(date +%s); echo "busy start $(date +%T) load $(cut -d' ' -f1 /proc/loadavg)"
bertlottery run configs/quickstart.yaml --run-dir /work/bench/qs-busy --no-progress > /work/bench/qs-busy.log 2>&1
echo "busy wall $(( $(date +%s) - s )) s"
kill $C
echo "all done $(date +%T)"
