//! SPIFFE value types (placeholder while the crate is written).
