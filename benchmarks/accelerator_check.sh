#!/usr/bin/env bash
# Accelerator check: does the project install, pass its contract and sharding tests, and run its benchmarks on this
# machine's accelerator? Prints jax.devices(), each stage's result and time, and the step-time and meta-training
# throughput tables; exits non-zero if any stage failed or timed out. Budget: under 8 minutes in all (the stages'
# time limits add up to 480 s). On an H100 (2026-11-27) the stages took 9, 3, 89, 31 and 14 s, the step-time stage
# about 175 s on a fresh machine (compile-bound: the learned optimizers' transformer programs compile in 40-60 s) and
# the throughput stage about 35 s: about 6 minutes in all.
#
# Works offline, on a machine that already has a CUDA (or other accelerator) build of jax plus flax, optax, chex,
# orbax-checkpoint, matplotlib, scikit-learn and tqdm. The few pure-Python packages it may lack (tensorboardX,
# tomli-w, pytest and their pure-Python dependencies; setuptools, the build backend) come from a local folder of
# wheels, .whl/, prepared beforehand on a machine with a package index by
#
#     benchmarks/accelerator_check.sh --download-wheels
#
# which runs `pip download --no-deps --only-binary=:all: -d .whl NAME...` for the names in WHEELS below.
#
# Usage (from anywhere; it works in the repository root):
#
#     benchmarks/accelerator_check.sh                 # install --no-deps, tests, quick-size benchmark tables
#     benchmarks/accelerator_check.sh --tiny          # miniature benchmarks (or LOPT_CHECK_SIZE=tiny)
#
# Options: --tiny (benchmarks at their tiny size; env LOPT_CHECK_SIZE=tiny|quick), --no-install (use the importable
# project as is), --skip-tests (benchmarks only), --allow-cpu (do not fail when jax finds no accelerator: the CPU
# self-test in tests/benchmarks/test_accelerator_check.py). Env PYTHON picks the interpreter (default python3);
# env LOPT_CHECK_TIME_SCALE (default 1) multiplies every stage's time limit (the limits are sized for an accelerator
# machine; the CPU self-test on a loaded 2-core machine needs more).
#
# The sharding tests (tests/meta_train/test_sharding.py) pin JAX_PLATFORMS=cpu with forced host devices (they need
# several devices and run anywhere); the script runs them as they are, then runs their worker once more on the
# accelerator (all devices against one device, same tolerance) so the sharding code path runs on real devices too.
set -uo pipefail

WHEELS=(setuptools tensorboardX tomli-w pytest pluggy iniconfig pygments pytest-xdist execnet)
PYTHON=${PYTHON:-python3}
SIZE=${LOPT_CHECK_SIZE:-quick}
TIME_SCALE=${LOPT_CHECK_TIME_SCALE:-1}
INSTALL=1
TESTS=1
ALLOW_CPU=0

cd "$(dirname "$0")/.." || exit 2
REPO=$(pwd)

while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) SIZE=tiny ;;
    --no-install) INSTALL=0 ;;
    --skip-tests) TESTS=0 ;;
    --allow-cpu) ALLOW_CPU=1 ;;
    --download-wheels)
      echo "downloading ${WHEELS[*]} into $REPO/.whl"
      exec "$PYTHON" -m pip download --no-deps --only-binary=:all: -d .whl "${WHEELS[@]}" ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "accelerator_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ "$TIME_SCALE" =~ ^[1-9][0-9]*$ ]] || { echo "LOPT_CHECK_TIME_SCALE must be a positive integer" >&2; exit 2; }
case "$SIZE" in
  tiny) STEP_ARGS=(--size tiny)
        THROUGHPUT_ARGS=(--calls 4 --warmup 1 --block 2 --num-tasks 2 --unroll-length 4 --episode-length 20) ;;
  quick) STEP_ARGS=(--size quick)
         THROUGHPUT_ARGS=(--calls 50 --warmup 5 --block 10) ;;
  *) echo "accelerator_check.sh: LOPT_CHECK_SIZE must be tiny or quick, got '$SIZE'" >&2; exit 2 ;;
esac

# A persistent compilation cache: a second run of the check skips most compiling.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$REPO/.jax_cache}
# Several pytest workers share one accelerator: no worker may grab 75% of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

SUMMARY=()
FAILED=0
START=$SECONDS

# run_stage NAME SECONDS COMMAND...: runs COMMAND under a time limit and records its outcome.
run_stage() {
  local name=$1 budget=$(($2 * TIME_SCALE))
  shift 2
  echo
  echo "=== $name (limit ${budget} s): $*"
  local begin=$SECONDS
  # Through a child bash so that COMMAND may be one of the (exported) functions below.
  timeout --kill-after=10 "$budget" bash -c '"$@"' bash "$@"
  local rc=$? status
  case $rc in
    0) status=ok ;;
    124|137) status="TIMED OUT after ${budget} s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  SUMMARY+=("$name: $status, $((SECONDS - begin)) s")
  [ $rc -eq 0 ] || FAILED=1
  return $rc
}

install_project() {
  # No index: the machine may have none. The build backend (setuptools >= 69) comes from .whl/ when it is there,
  # else from the environment (--no-build-isolation: needs setuptools >= 70.1, or an older one with wheel).
  if compgen -G '.whl/setuptools-*.whl' >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --find-links .whl --no-deps -e . || return 1
  else
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . || {
      echo "installing the project without build isolation failed (see above); with setuptools < 70.1 and no" \
           "wheel package, put a setuptools wheel in .whl/ (benchmarks/accelerator_check.sh --download-wheels)" >&2
      return 1; }
  fi
  local missing=()
  "$PYTHON" -c 'import tensorboardX' 2>/dev/null || missing+=(tensorboardX)
  "$PYTHON" -c 'import tomli_w' 2>/dev/null || missing+=(tomli-w)
  "$PYTHON" -c 'import pytest' 2>/dev/null || missing+=(pytest)
  "$PYTHON" -c 'import xdist' 2>/dev/null || missing+=(pytest-xdist)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ ! -d .whl ]; then
    echo "missing ${missing[*]} and no .whl/ folder: run 'benchmarks/accelerator_check.sh --download-wheels' on a" \
         "machine with a package index and copy .whl/ here" >&2
    return 1
  fi
  "$PYTHON" -m pip install -q --no-index --find-links .whl "${missing[@]}"
}

show_device() {
  "$PYTHON" - "$ALLOW_CPU" <<'EOF'
import sys
import jax, lopt
import jaxlib
print(f'jax {jax.__version__} (jaxlib {jaxlib.__version__}); '
      f'backend {jax.default_backend()}; lopt imported from {lopt.__file__}')
print(f'jax.devices() = {jax.devices()}')
if jax.default_backend() == 'cpu' and sys.argv[1] != '1':
  sys.exit('no accelerator: jax found only CPU devices. Is a CUDA build of jax installed (pip list | grep -i jax: '
           'jax-cuda12-plugin or jax-cuda13-plugin) and does nvidia-smi see a GPU? (--allow-cpu runs the check '
           'on CPU anyway.)')
EOF
}

# The sharding worker of tests/meta_train on the accelerator (no JAX_PLATFORMS pin): the meta-gradient over all
# devices equals the one over a single device, and a short sharded run checkpoints and resumes.
sharding_on_accelerator() {
  local worker
  worker=$(find tests -name sharding_worker.py | head -n 1)
  [ -n "$worker" ] || { echo 'tests/**/sharding_worker.py not found' >&2; return 1; }
  "$PYTHON" - "$worker" <<'EOF'
import os, subprocess, sys, tempfile
import numpy as np
worker = os.path.abspath(sys.argv[1])
here = os.path.dirname(worker)
sys.path.insert(0, here)
import quadratic_fixture  # the tests' tiny config and environment
with tempfile.TemporaryDirectory() as tmp:
  import pathlib
  env = quadratic_fixture.subprocess_env(pathlib.Path(tmp))
  env.pop('JAX_PLATFORMS')  # the fixture pins CPU; here the point is the accelerator
  out = os.path.join(tmp, 'out.npz')
  cmd = [sys.executable, worker, quadratic_fixture.write_tiny_config(pathlib.Path(tmp)), out, '--devices', '0,1',
         '--train-dir', os.path.join(tmp, 'run')]
  done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
  if done.returncode:
    sys.exit(f'sharding worker failed (exit {done.returncode}):\n{done.stderr[-3000:]}')
  r = np.load(out)
  grads = lambda p: [r[k] for k in sorted(k for k in r.files if k.startswith(p))]
  assert grads('d0_grad_'), 'no gradients written'
  for a, b in zip(grads('d0_grad_'), grads('d1_grad_'), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  assert int(r['train_resumed_from']) == 3, int(r['train_resumed_from'])
  print(f'meta-gradient over all {int(r["d0_num_devices"])} device(s) (ensemble split over '
        f'{r["d0_split_over"].tolist()}) equals the single-device one to rtol 1e-5; sharded run resumed from step 3')
EOF
}

export PYTHON ALLOW_CPU
export -f install_project show_device sharding_on_accelerator

echo "accelerator check in $REPO: size $SIZE, python $("$PYTHON" --version 2>&1)"
if [ $INSTALL -eq 1 ]; then
  run_stage "install (pip --no-deps)" 25 install_project
fi
run_stage "device" 20 show_device || { echo; printf '%s\n' "${SUMMARY[@]}"; exit 1; }

if [ $TESTS -eq 1 ]; then
  XDIST=()
  "$PYTHON" -c 'import xdist' 2>/dev/null && XDIST=(-n 4)
  run_stage "contract suite (tests/lopt/test_contract.py)" 110 \
      "$PYTHON" -m pytest -q -p no:cacheprovider "${XDIST[@]}" tests/lopt/test_contract.py
  mapfile -t SHARDING_TESTS < <(find tests -name 'test_sharding*.py' | sort)
  if [ ${#SHARDING_TESTS[@]} -eq 0 ]; then
    echo 'no tests/**/test_sharding*.py found' >&2
    SUMMARY+=("sharding tests: FAILED (not found)")
    FAILED=1
  else
    run_stage "sharding tests (${SHARDING_TESTS[*]}; CPU host devices, as written)" 45 \
        "$PYTHON" -m pytest -q -p no:cacheprovider "${XDIST[@]}" "${SHARDING_TESTS[@]}"
  fi
  run_stage "sharding worker on the accelerator" 30 sharding_on_accelerator
fi

run_stage "optimizer step time (benchmarks/lopt_step_time.py ${STEP_ARGS[*]})" 190 \
    "$PYTHON" -m benchmarks.lopt_step_time "${STEP_ARGS[@]}"
run_stage "meta-training throughput (benchmarks/meta_train_throughput.py ${THROUGHPUT_ARGS[*]})" 60 \
    "$PYTHON" -m benchmarks.meta_train_throughput "${THROUGHPUT_ARGS[@]}"

echo
echo "=== summary ($((SECONDS - START)) s in all)"
printf '%s\n' "${SUMMARY[@]}"
if [ $FAILED -ne 0 ]; then
  echo "accelerator check: FAILED"
  exit 1
fi
echo "accelerator check: all stages passed"
