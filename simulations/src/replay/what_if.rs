//! `replay --what-if KEY=VALUE`: the fleet's rotation re-run over the recorded timeline with
//! other settings (issue 12 §2). Being written: needs the engine's scenario API.

use super::{Folded, ReplayArgs, ReplayError};

/// Runs the baseline and the changed settings over the log's timeline and prints the
/// comparison.
pub fn run(
    args: &ReplayArgs,
    folded: &Folded,
    out: &mut dyn std::io::Write,
) -> Result<(), ReplayError> {
    let _ = (folded, out);
    Err(ReplayError::WhatIf(format!(
        "{:?}: not available in this build yet",
        args.what_if
    )))
}
