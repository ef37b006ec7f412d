//! Compile-time behaviour of `#[idempotent]` and `#[saga_step]` (the cases `saga_*`): what
//! they accept (`ui/pass`) and, for each mistake, the one error reported and where
//! (`ui/fail`, with the expected `.stderr`).
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test --test ui`, then read it.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}
