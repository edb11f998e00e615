#!/usr/bin/env bash
# The whole SLURM check, as root on a throwaway Debian/Ubuntu machine (CI):
#   1. tests/slurm/cluster.sh up      one-node SLURM + slurmdbd/MariaDB accounting on loopback (apt-get if needed)
#   2. tests/slurm/cluster.sh smoke   sbatch --wrap hostname -> sacct COMPLETED
#   3. SEAS_SLURM_TEST=1 pytest -m slurm tests/workflow/test_slurm.py
#        the demo slice through `snakemake --workflow-profile profiles/slurm` + the same slice locally;
#        sacct says every stage ran as its own job and COMPLETED; outputs byte-identical
#   4. tests/slurm/cluster.sh down --purge   (always, also on failure; --keep leaves the cluster running)
#
#   sudo tests/slurm/run.sh [--keep] [extra pytest args]
# Exit status: pytest's (or the first failing step's).
set -euo pipefail
cd "$(dirname "$0")/../.."
KEEP=0
if [[ ${1:-} == --keep ]]; then KEEP=1; shift; fi
PY=${SEAS_PYTHON:-.venv/bin/python}

main() {
  t0=$SECONDS
  if ((!KEEP)); then trap 'tests/slurm/cluster.sh down --purge || true' EXIT; fi
  tests/slurm/cluster.sh up
  tests/slurm/cluster.sh smoke
  echo "[run.sh] cluster ready after $((SECONDS - t0)) s" >&2
  rc=0
  SEAS_SLURM_TEST=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" -m pytest tests/workflow/test_slurm.py -m slurm -q -rs "$@" || rc=$?
  echo "[run.sh] SLURM tests rc=$rc, total $((SECONDS - t0)) s" >&2
  exit $rc
}

# parsed whole before it runs: editing this file during a run cannot derail the run
main "$@"; exit $?
