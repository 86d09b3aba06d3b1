//! Wire definitions (placeholder while the crate is written).
