//! Event log (placeholder).
