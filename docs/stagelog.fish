# fish completion for stagelog(1)
#
# Installed as "stagelog.fish" in fish's vendor completions folder, where
# fish loads it on first use. Stage ids come from "stagelog --json list"
# (--all for show), against the store of a --db given earlier on the
# command line, else $STAGELOG_DB, else the default: completion only reads
# the store and creates nothing.
#
# tests/cli/test_completion.py compares the options below with each
# command's --help: one `complete` a line, the command named by
# __fish_seen_subcommand_from.

set -l commands stage run release forget publish recover list show gc check metrics help
set -l states staging ready releasing released aborted recovering recovered failed published

# The ids of the in-flight stages, or of every record with "all".
function __stagelog_ids
    set -l args
    set -l tokens (commandline -opc)
    set -l i (contains -i -- --db $tokens)
    if test -n "$i"; and test (count $tokens) -gt $i
        set args --db $tokens[(math $i + 1)]
    else if set -q STAGELOG_DB
        set args --db $STAGELOG_DB
    end
    set -a args --json list
    test "$argv[1]" = all; and set -a args --all
    timeout 3 stagelog $args 2>/dev/null </dev/null |
        string match -r -g '"id"\s*:\s*"([0-9a-f]{32})"'
end

complete -c stagelog -f

# Global options, before the command.
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -l db -r -F -d 'the store'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -l json -d 'print one JSON document on stdout'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -s q -l quiet -d 'print less on stderr'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -s v -l verbose -d 'print more on stderr'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -s h -l help -d 'print the help'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -l version -d 'print the version'

# The commands.
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a stage -d 'stage an OCI bundle and leave it ready'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a run -d 'stage a bundle, run a runtime on it, release it'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a release -d 'remove a stage and mark it released'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a forget -d 'drop the record of a failed or stale stage'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a publish -d 'move a ready stage to a destination'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a recover -d 'remove stale stages'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a list -d 'list in-flight stages'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a show -d 'show one stage and its entries'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a gc -d 'delete old records of finished stages'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a check -d 'check the store and look for orphans'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a metrics -d 'print metrics in the Prometheus text format'
complete -c stagelog -n "not __fish_seen_subcommand_from $commands" -a help -d 'print the help of stagelog or of a command'

# What every command takes.
complete -c stagelog -n "__fish_seen_subcommand_from $commands" -l json -d 'print one JSON document on stdout'
complete -c stagelog -n "__fish_seen_subcommand_from $commands" -s h -l help -d 'print the help'

# stage
complete -c stagelog -n "__fish_seen_subcommand_from stage" -l root -x -a '(__fish_complete_directories)' -d 'the staging root'
complete -c stagelog -n "__fish_seen_subcommand_from stage" -l bundle -x -a '(__fish_complete_directories)' -d 'the packaged bundle'
complete -c stagelog -n "__fish_seen_subcommand_from stage" -l label -x -d 'the label'
complete -c stagelog -n "__fish_seen_subcommand_from stage" -l env -x -a '(set -xn)' -d 'put NAME or NAME=VALUE in process.env'
complete -c stagelog -n "__fish_seen_subcommand_from stage" -l env-file -r -F -d 'read NAME=VALUE lines'
complete -c stagelog -n "__fish_seen_subcommand_from stage" -l env-keep -x -d 'keep NAME with its packaged value'
complete -c stagelog -n "__fish_seen_subcommand_from stage" -l owner -x -a '(__fish_complete_pids)' -d 'the process the stage belongs to'

# run
complete -c stagelog -n "__fish_seen_subcommand_from run" -l root -x -a '(__fish_complete_directories)' -d 'the staging root'
complete -c stagelog -n "__fish_seen_subcommand_from run" -l bundle -x -a '(__fish_complete_directories)' -d 'the packaged bundle'
complete -c stagelog -n "__fish_seen_subcommand_from run" -l label -x -d 'the label'
complete -c stagelog -n "__fish_seen_subcommand_from run" -l env -x -a '(set -xn)' -d 'put NAME or NAME=VALUE in process.env'
complete -c stagelog -n "__fish_seen_subcommand_from run" -l env-file -r -F -d 'read NAME=VALUE lines'
complete -c stagelog -n "__fish_seen_subcommand_from run" -l env-keep -x -d 'keep NAME with its packaged value'
complete -c stagelog -n "__fish_seen_subcommand_from run" -l pass-env -x -a '(set -xn)' -d 'pass NAME to the runtime'
complete -c stagelog -n "__fish_seen_subcommand_from run" -a '(__fish_complete_command)' -d 'runtime'

# release, forget, publish, show: an id (publish: then a folder)
complete -c stagelog -n "__fish_seen_subcommand_from release forget publish" -a '(__stagelog_ids inflight)' -d 'stage id'
complete -c stagelog -n "__fish_seen_subcommand_from publish" -a '(__fish_complete_directories)'
complete -c stagelog -n "__fish_seen_subcommand_from show" -a '(__stagelog_ids all)' -d 'stage id'

# recover
complete -c stagelog -n "__fish_seen_subcommand_from recover" -l dry-run -d 'report what would be done and change nothing'
complete -c stagelog -n "__fish_seen_subcommand_from recover" -l root -x -a '(__fish_complete_directories)' -d 'only stages under this staging root'
complete -c stagelog -n "__fish_seen_subcommand_from recover" -l force -x -a '(__stagelog_ids inflight)' -d 'treat this in-flight stage as stale'

# list
complete -c stagelog -n "__fish_seen_subcommand_from list" -l all -d 'list every record, finished stages too'
complete -c stagelog -n "__fish_seen_subcommand_from list" -l label -x -d 'only stages with this label'
complete -c stagelog -n "__fish_seen_subcommand_from list" -l state -x -a "$states" -d 'only stages in this state'
complete -c stagelog -n "__fish_seen_subcommand_from list" -s q -l quiet -d 'print the full ids only'
complete -c stagelog -n "__fish_seen_subcommand_from list" -l no-legend -d 'print the table without its header line'

# gc
complete -c stagelog -n "__fish_seen_subcommand_from gc" -l older-than -x -a '30m 1h 12h 1d 7d 30d' -d 'a whole number and a unit: s, m, h or d'

# check
complete -c stagelog -n "__fish_seen_subcommand_from check" -l root -x -a '(__fish_complete_directories)' -d 'scan this staging root'
complete -c stagelog -n "__fish_seen_subcommand_from check" -l remove-orphans -d 'remove the orphans that nobody holds locked'

# metrics
complete -c stagelog -n "__fish_seen_subcommand_from metrics" -l output -r -F -d 'write this file atomically'

# help: a command
complete -c stagelog -n "__fish_seen_subcommand_from help" -a "$commands"
