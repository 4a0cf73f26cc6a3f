#!/usr/bin/env bash
# The accelerator measurements of the README, in one run (about 10 minutes on one H100/H200):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # OUT_DIR defaults to $OUT, else ./gpu_check
#
# 1. train_bench at 256 px, batch 24, float32 and bfloat16, part by part (scene share, network
#    utilization against PEAK_TFLOPS), then 128 px the same, whole step only;
# 2. render_bench at batch 64 (~75k triangles, 128 and 256 px), the rasterizer sized and as
#    training calls it;
# 3. edit_bench on CHECKPOINT (a training workdir); without one, a 2-step checkpoint of
#    configs/synthetic.py:tiny is trained first (speed only: its outputs mean nothing).
#
# Each stage has its own time limit and writes its table to OUT_DIR as it finishes, so a stage that
# runs out of time leaves the others' figures. Environment: PEAK_TFLOPS (default 989, bf16 dense of
# an H100 SXM / H200), CHECKPOINT, SIM3DR (a folder where Sim3DR_Cython was built, optional).
set -u
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check}}"
mkdir -p "$out"
peak="${PEAK_TFLOPS:-989}"
python=${PYTHON:-python}
run() {  # run NAME SECONDS COMMAND...: output to $out/NAME.txt, the table's lines echoed
  local name=$1 limit=$2
  shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  echo "exit $?"
  grep -v -E "^(I|W)[0-9]{4} |Shuffling|Generating|Downloading|Dataset |^\s*$" "$out/$name.txt" | tail -12
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  $python -c "import jax; print(jax.__version__, jax.devices())"; } | tee "$out/device.txt"
run train_256 300 $python benchmarks/train_bench.py --sizes=256 --batch=24 --dtypes=float32,bfloat16 \
  --peak_tflops="$peak" --steps=5 --data=/tmp/gpu_check_data
run train_128 150 $python benchmarks/train_bench.py --sizes=128 --batch=24 --dtypes=float32,bfloat16 \
  --peak_tflops="$peak" --steps=5 --noparts --data=/tmp/gpu_check_data
run render_64 120 $python benchmarks/render_bench.py --sizes=128,256 --batches=64 --details=high --reps=10 \
  ${SIM3DR:+--sim3dr="$SIM3DR"}
checkpoint="${CHECKPOINT:-}"
if [ -z "$checkpoint" ]; then
  checkpoint=/tmp/gpu_check_tiny
  run train_tiny 120 $python -m tfvgan_jax.main --config=configs/synthetic.py:tiny --workdir="$checkpoint" \
    --config.data.synthetic.cache_dir=/tmp/gpu_check_data/tiny
fi
run edit 150 $python benchmarks/edit_bench.py --checkpoint="$checkpoint"
