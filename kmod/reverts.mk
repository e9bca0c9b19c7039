# Revert switches: each puts one known correctness fix's old behaviour back, compiled in only when asked
# (make -C kmod REVERT=<name>), so `npm run prove -- <name>` can show a named test failing without the fix.
# Each name becomes -DDMKIT_REVERT_<NAME> (upper case, '-' -> '_') for every module.
KNOWN_REVERTS := era-postsuspend tm-commit-order clone-flush snapshot-header cache-shared-metadata
