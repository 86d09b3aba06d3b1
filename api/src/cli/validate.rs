//! `validate` (SPIRE's): loads and checks the configuration exactly as `run` does (the same
//! file, flags and rules: [`Config::load`]) and stops there: no store is opened, no key read,
//! no socket bound. Prints "Configuration is valid." or fails with the error that names the
//! key, exit code 0 or 1.

use std::io::Write;

use clap::Args;
use serde_json::json;

use super::common::{json, line, CliError, OutputFormat};
use super::RunArgs;
use crate::config::Config;

const VERB: &str = "validate";

/// `validate`: `run`'s flags, and `--output`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Output format.
    #[arg(long = "output", value_enum, default_value = "pretty")]
    pub output: OutputFormat,
}

/// Runs `validate`.
pub async fn run(a: ValidateArgs, out: &mut dyn Write) -> Result<(), CliError> {
    let shown = a
        .run
        .config
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "(no --config: defaults and flags)".into());
    let result = Config::load(a.run.config.as_deref(), &a.run.overrides());
    match (&result, a.output) {
        (Ok(c), OutputFormat::Json) => json(
            out,
            &json!({ "valid": true, "config": shown, "trust_domain": c.trust_domain.to_string() }),
        ),
        (Err(e), OutputFormat::Json) => json(
            out,
            &json!({ "valid": false, "config": shown, "error": e.to_string() }),
        ),
        (Ok(c), OutputFormat::Pretty) => line(
            out,
            format!(
                "Configuration is valid: {shown} (trust domain {})",
                c.trust_domain
            ),
        ),
        (Err(_), OutputFormat::Pretty) => {}
    }
    result.map(|_| ()).map_err(|e| CliError::Usage {
        verb: VERB,
        message: format!("configuration is invalid: {e}"),
    })
}
