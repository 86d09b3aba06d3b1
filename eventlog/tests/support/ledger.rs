//! A small event type for the log's black-box tests and golden files, with one schema change
//! (v1 → v2: `Deposited.cents` widened from u32 to u64 and a `memo` added) so that upcasting
//! is exercised.

use serde::{Deserialize, Serialize};
use tessera_eventlog::typed::{decode_payload, CodecError};
use tessera_eventlog::Event;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ledger {
    Opened {
        account: String,
    },
    Deposited {
        account: String,
        cents: u64,
        memo: Option<String>,
    },
    Closed {
        account: String,
    },
}

/// The schema as it was at version 1. Only ever decoded, through `Ledger::upcast`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedgerV1 {
    Opened { account: String },
    Deposited { account: String, cents: u32 },
    Closed { account: String },
}

impl LedgerV1 {
    pub fn kind(&self) -> &'static str {
        match self {
            LedgerV1::Opened { .. } => "Opened",
            LedgerV1::Deposited { .. } => "Deposited",
            LedgerV1::Closed { .. } => "Closed",
        }
    }
}

impl Event for Ledger {
    const SCHEMA_VERSION: u32 = 2;

    fn kind(&self) -> &'static str {
        match self {
            Ledger::Opened { .. } => "Opened",
            Ledger::Deposited { .. } => "Deposited",
            Ledger::Closed { .. } => "Closed",
        }
    }

    fn upcast(kind: &str, schema_version: u32, payload: &[u8]) -> Result<Self, CodecError> {
        match schema_version {
            1 => Ok(match decode_payload::<LedgerV1>(0, kind, 1, payload)? {
                LedgerV1::Opened { account } => Ledger::Opened { account },
                LedgerV1::Deposited { account, cents } => Ledger::Deposited {
                    account,
                    cents: u64::from(cents),
                    memo: None,
                },
                LedgerV1::Closed { account } => Ledger::Closed { account },
            }),
            _ => Err(CodecError::UnsupportedVersion {
                kind: kind.to_owned(),
                found: schema_version,
                current: Self::SCHEMA_VERSION,
            }),
        }
    }
}

pub fn deposit(account: &str, cents: u64) -> Ledger {
    Ledger::Deposited {
        account: account.to_owned(),
        cents,
        memo: None,
    }
}
