# Sourced by the scripts: `step "what" "how long it usually takes" CMD...`
# runs CMD and says what it is doing before, and how long it took after,
# so that a cold set-up is not a silent 20 minutes. Lines go to stderr
# (some scripts print a path on stdout).
step() {
  local what="$1" usually="$2" start=$SECONDS
  shift 2
  echo "[neuropods] $what (usually $usually) ..." >&2
  "$@"
  echo "[neuropods] $what: done in $((SECONDS - start)) s" >&2
}
