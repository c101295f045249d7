//! Plugins compiled into midge, named by `plugin builtin:NAME` (see `registry::BUILTINS`).
