# hushfs for direnv: `use hushfs` in a project's .envrc mounts the
# project's secrets on entering the directory and exports the path — never
# the values.
#
# Install: add to ~/.config/direnv/direnvrc
#     source /path/to/hushfs/mountscripts/hushfs-direnv.sh
# Then in the project's .envrc:
#     use hushfs             # project from hushfs.toml, mount at ./.hushfs
#     use hushfs myapp       # this project
#     use hushfs myapp dir   # this project, mounted at ./dir
# and add the mount directory to .gitignore.
#
# Exports HUSHFS_DIR (the mount) and HUSHFS_PROJECT. The mount stays when
# you leave the directory (other shells may use it): `hushfs umount DIR`.
# Nothing in the environment is secret; processes read the files through
# `hushfs run --mount "$HUSHFS_DIR" -- CMD`.

use_hushfs() {
    local project="${1:-}"
    local dir="${2:-.hushfs}"
    case "$dir" in /*) ;; *) dir="$PWD/$dir" ;; esac
    mkdir -p "$dir" || return 1
    if ! grep -qs " $dir fuse.hushfs " /proc/self/mounts; then
        local args=(mount "$dir")
        [ -n "$project" ] && args+=(--project "$project")
        log_status "hushfs: mounting ${project:-the project} at $dir"
        hushfs "${args[@]}" >&2 || {
            log_error "hushfs: mount failed (locked? run \`hushfs unlock\`)"
            return 1
        }
    fi
    export HUSHFS_DIR="$dir"
    [ -n "$project" ] && export HUSHFS_PROJECT="$project"
    [ -f hushfs.toml ] && watch_file hushfs.toml
    return 0
}
