//! `validate` (SPIRE's): loads and checks the configuration exactly as `run` does (the same
//! file, flags and rules: [`AgentConfig::load`]) and stops there: no attestation, no server
//! connection, no socket bound. Prints "Configuration is valid: ..." or fails with the error
//! that names the key, exit code 0 or 1.

use std::io::Write;

use clap::Args;

use super::client::CliError;
use super::RunArgs;
use crate::config::AgentConfig;

/// `validate`: `run`'s flags.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `validate`.
pub async fn run(a: ValidateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let config = AgentConfig::load(a.run.config.as_deref(), &a.run.overrides()).map_err(|e| {
        CliError::Usage {
            verb: "validate",
            message: format!("configuration is invalid: {e}"),
        }
    })?;
    let shown = a
        .run
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no --config: defaults and flags)".into());
    let _ = writeln!(
        out,
        "Configuration is valid: {shown} (trust domain {})",
        config.trust_domain
    );
    Ok(())
}
