//! Built only under `--cfg perpcore_lint_canary`, by `.ci/run`: one of each thing the
//! deterministic core must not do, so that CI sees clippy refuse them (and fails if
//! clippy lets them through, i.e. if the bans in clippy.toml or the crate root's
//! `#![deny]` went missing). Never part of a normal build.

/// Two clock reads and two hash maps that could be iterated.
pub fn forbidden() -> usize {
    // determinism-ok: the canary exists for clippy to refuse these two reads; it is built
    // only under --cfg perpcore_lint_canary, never into the engine.
    let started = std::time::Instant::now(); // determinism-ok
    let wall = std::time::SystemTime::now(); // determinism-ok
    let map: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let set: fxhash::FxHashSet<u64> = fxhash::FxHashSet::default();
    usize::from(started.elapsed().is_zero() && wall.elapsed().is_err()) + map.len() + set.len()
}
