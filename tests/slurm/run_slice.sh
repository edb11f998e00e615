#!/usr/bin/env bash
# Run a slice of the demo DAG through `snakemake --workflow-profile profiles/slurm` on a real SLURM cluster,
# and the same slice locally (workstation profile, same config and seeds) for comparison.
#
#   tests/slurm/run_slice.sh OUT_DIR [slurm|local|both]      (default: both)
#
# Slice (tests/slurm/slice_config.yaml): product `washer` of the demo dataset, tiny SD model:
#   demo_data -> tiny_sd -> split -> train_generator -> train_rmp -> generate (2 types) -> train_seg (bisenetv2)
# every one of them its own SLURM job. Writes, per mode, OUT_DIR/<mode>/ (the run's --directory, with
# results/ and resources/), OUT_DIR/<mode>.log (snakemake's output) and OUT_DIR/<mode>.seconds (wall time).
# The SLURM run's job ids are in OUT_DIR/slurm.log ("... submitted with SLURM jobid N (log: .../rule_R/N.log)").
#
# Both runs execute a snapshot of the code taken once into OUT_DIR/src (seas/, downstream/, workflow/,
# profiles, envs/): a working tree edited while the slice runs cannot make the two runs differ. `both`
# takes a fresh snapshot; `slurm`/`local` alone reuse OUT_DIR/src if present.
# The cluster side: partition/account/resources come from tests/slurm/overlay.yaml, merged over
# profiles/slurm and passed as command-line flags (see tests/slurm/overlay_args.py for why).
# Environment: SEAS_PYTHON (default .venv/bin/python of the repo), SEAS_SLURM_OVERLAY (default the overlay
# above), SEAS_SLICE_CONFIG (default tests/slurm/slice_config.yaml).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PY=${SEAS_PYTHON:-$REPO/.venv/bin/python}
OVERLAY=${SEAS_SLURM_OVERLAY:-$REPO/tests/slurm/overlay.yaml}
CONFIG=$(realpath "${SEAS_SLICE_CONFIG:-$REPO/tests/slurm/slice_config.yaml}")
OUT=${1:?usage: run_slice.sh OUT_DIR [slurm|local|both]}
MODE=${2:-both}
mkdir -p "$OUT"
OUT=$(realpath "$OUT")

# the slice's last output, in its configuration's stage folders (seas.run.layout)
TARGET=$(PYTHONPATH=$REPO "$PY" -m seas.run.layout --config "$CONFIG" --path seg_model bisenetv2 seas)

log() { printf '[run_slice %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

snapshot() {  # copy the code the workflow runs into $OUT/src (the Snakefile puts its parent on PYTHONPATH)
  [[ -d $OUT/src/workflow ]] && return
  log "snapshot of the code -> $OUT/src"
  mkdir -p "$OUT/src"
  rsync -a --exclude __pycache__ --exclude '*.pyc' seas downstream workflow envs config.yaml "$OUT/src/"
  mkdir -p "$OUT/src/config" && rsync -a config/studies "$OUT/src/config/"
  ln -sfn workflow/profiles "$OUT/src/profiles"
}

run_mode() {  # run_mode slurm|local
  local mode=$1 t0 rc=0
  local -a flags
  if [[ $mode == slurm ]]; then
    mapfile -t flags < <("$PY" tests/slurm/overlay_args.py --profile "$OUT/src/profiles/slurm" --overlay "$OVERLAY")
    ((${#flags[@]})) || { log "overlay_args.py printed nothing"; return 2; }
    flags=(--workflow-profile profiles/slurm "${flags[@]}")
  else
    flags=(--workflow-profile profiles/default --cores 2)
  fi
  rm -rf "${OUT:?}/$mode"
  mkdir -p "$OUT/$mode"
  log "$mode run -> $OUT/$mode (log: $OUT/$mode.log)"
  t0=$(date +%s.%N)
  (cd "$OUT/src" && "$PY" -m snakemake --snakefile workflow/Snakefile --directory "$OUT/$mode" \
    --configfile "$CONFIG" "${flags[@]}" "$TARGET") >"$OUT/$mode.log" 2>&1 || rc=$?
  python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$t0" "$(date +%s.%N)" \
    >"$OUT/$mode.seconds"
  log "$mode run: rc=$rc in $(cat "$OUT/$mode.seconds") s"
  if ((rc)); then tail -n 40 "$OUT/$mode.log" >&2; fi
  return $rc
}

main() {
  case $MODE in
    slurm | local) snapshot && run_mode "$MODE" ;;
    both) rm -rf "${OUT:?}/src" && snapshot && run_mode slurm && run_mode local ;;
    *) echo "usage: run_slice.sh OUT_DIR [slurm|local|both]" >&2; exit 2 ;;
  esac
}

# parsed whole before it runs: editing this file during a run cannot derail the run
main "$@"; exit $?
