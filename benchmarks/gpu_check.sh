#!/usr/bin/env bash
# The accelerator measurements of the README, in one run (about 11 minutes on one H100/H200; where
# one command may run 10 minutes at most, run it twice with STAGES split, e.g. "train_256" and
# "gen_norms render_64 train_128 edit"):
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]          # OUT_DIR defaults to $OUT, else ./gpu_check
#
# 0. an import check of the training stack (stops the run at once if it fails);
# 1. train_bench at 256 px, batch 24, bfloat16 then float32 (DTYPES), part by part (scene share,
#    network utilization against PEAK_TFLOPS);
# 1b. generator_bench at 256 px, batch 24, bfloat16: E and G's step with each normalization (rcn, spade,
#    adain, instance): what the normalization layers cost of the networks' time;
# 2. render_bench at batch 64 (~75k triangles, 128 and 256 px), the rasterizer sized and as
#    training calls it;
# 3. train_bench at 128 px, batch 24, float32 and bfloat16, whole step only;
# 4. edit_bench on CHECKPOINT (a training workdir); without one, a 2-step checkpoint of
#    configs/synthetic.py:tiny is trained first (speed only: its outputs mean nothing). Skipped when
#    PyAV or LiteRT is not installed or the face models are not fetched.
#
# Each stage has its own time limit and writes its table to OUT_DIR as it finishes, so a stage that
# runs out of time leaves the others' figures. A stage that fails outright (not a time-out) stops
# the run when FAIL_FAST=1 (the default), so a broken environment costs seconds, not the whole
# budget. Environment: PEAK_TFLOPS (default 989, bf16 dense of an H100 SXM / H200), CHECKPOINT,
# SIM3DR (a folder where Sim3DR_Cython was built, optional), DATA (where the synthetic corpora are
# cached, default /tmp/gpu_check_data), PYTHON (default python), DTYPES (default bfloat16,float32),
# STAGES (default "train_256 gen_norms render_64 train_128 edit").
set -u
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check}}"
mkdir -p "$out"
peak="${PEAK_TFLOPS:-989}"
python=${PYTHON:-python}
data=${DATA:-/tmp/gpu_check_data}
stages=" ${STAGES:-train_256 gen_norms render_64 train_128 edit} "
dtypes=${DTYPES:-bfloat16,float32}
run() {  # run NAME SECONDS COMMAND...: output to $out/NAME.txt, the table's lines echoed
  local name=$1 limit=$2 status
  shift 2
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s)"
  timeout "$limit" "$@" > "$out/$name.txt" 2>&1
  status=$?
  echo "exit $status"
  grep -v -E "^(I|W)[0-9]{4} |Shuffling|Generating|Downloading|Dataset |^\s*$|\[A$" "$out/$name.txt" | tail -14
  if [ "$status" -ne 0 ] && [ "$status" -ne 124 ] && [ "${FAIL_FAST:-1}" = 1 ]; then
    echo "stage $name failed (exit $status): stopping (FAIL_FAST=1)"
    exit "$status"
  fi
  return 0
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  $python -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'orbax', o.__version__, jax.devices())"; } | tee "$out/device.txt"
run imports 120 $python -c "import grain, tensorflow_datasets, ml_collections, tfvgan_jax.train, tfvgan_jax.data.pipeline
print('training stack imports')"
case $stages in *" train_256 "*)
  run train_256 300 $python benchmarks/train_bench.py --sizes=256 --batch=24 --dtypes="$dtypes" \
    --peak_tflops="$peak" --steps=5 --data="$data";;
esac
case $stages in *" gen_norms "*)
  run gen_norms 150 $python benchmarks/generator_bench.py --config=configs/voxceleb.py --size=256 --batch=24 \
    --dtype=bfloat16 --repeats=2 --vary=norm=rcn,spade,adain,instance;;
esac
case $stages in *" render_64 "*)
  run render_64 100 $python benchmarks/render_bench.py --sizes=128,256 --batches=64 --details=high --reps=10 \
    ${SIM3DR:+--sim3dr="$SIM3DR"};;
esac
case $stages in *" train_128 "*)
  run train_128 130 $python benchmarks/train_bench.py --sizes=128 --batch=24 --dtypes="$dtypes" \
    --peak_tflops="$peak" --steps=5 --noparts --data="$data";;
esac
case $stages in *" edit "*)
  if ! $python -c "import av, ai_edge_litert" 2>/dev/null || ! $python -m data_prep.models path >/dev/null 2>&1; then
    echo "== edit skipped: PyAV or LiteRT missing, or the face models not fetched (python -m data_prep.models fetch)"
  else
    checkpoint="${CHECKPOINT:-}"
    if [ -z "$checkpoint" ]; then
      checkpoint=/tmp/gpu_check_tiny
      run train_tiny 120 $python -m tfvgan_jax.main --config=configs/synthetic.py:tiny --workdir="$checkpoint" \
        --config.data.synthetic.cache_dir="$data/tiny"
    fi
    run edit 150 $python benchmarks/edit_bench.py --checkpoint="$checkpoint"
  fi;;
esac
