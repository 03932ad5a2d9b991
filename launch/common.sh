# Helpers shared by the launch scripts (sourced, not run). Each script sets SCRIPT_NAME and
# HELP_COMMAND first, and DRY_RUN before calling announce/run/export_var.

# Prints an error naming the script, how to get its usage, and exits with status 2.
die() {
  echo "$SCRIPT_NAME: error: $*" >&2
  echo "Run $HELP_COMMAND for usage." >&2
  exit 2
}

# Prints its arguments as one shell command line, quoting only the words that need it.
shell_quote() {
  local word quoted=()
  for word in "$@"; do
    if [[ $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      quoted+=("$word")
    else
      quoted+=("'${word//\'/\'\\\'\'}'")
    fi
  done
  printf '%s\n' "${quoted[*]}"
}

# Prints a command: on stdout in a dry run (one per line), else on stderr after "+ ".
announce() {
  if [[ $DRY_RUN == 1 ]]; then
    shell_quote "$@"
  else
    echo "+ $(shell_quote "$@")" >&2
  fi
}

# Announces a command and runs it unless this is a dry run.
run() {
  announce "$@"
  [[ $DRY_RUN == 1 ]] || "$@"
}

# Announces and performs `export NAME=VALUE` (only announced in a dry run).
export_var() {
  announce export "$1=$2"
  [[ $DRY_RUN == 1 ]] || export "$1=$2"
}
