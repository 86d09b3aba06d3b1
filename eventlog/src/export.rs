//! A portable file of records: for audits, backups and the golden files that pin the stored
//! format. Layout: the 16-byte header below, then per record a u32 BE length and the record in
//! its stored encoding.

use std::io::{Read, Write};

use crate::error::DecodeError;
use crate::record::Record;

/// First bytes of an export file, including its format version.
pub const HEADER: &[u8; 16] = b"TESSERA-LOG\0v001";

/// Reading an export file failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The file does not start with [`HEADER`].
    #[error("not a Tessera log export (bad header)")]
    BadHeader,
    /// Record number `index` (from 0) is undecodable.
    #[error("record #{index} in the export: {error}")]
    Record {
        /// Its position in the file.
        index: usize,
        /// Why.
        error: DecodeError,
    },
    /// I/O failed.
    #[error("export I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `records` to `out` in the export layout.
pub fn write_export<'a>(
    out: &mut impl Write,
    records: impl IntoIterator<Item = &'a Record>,
) -> std::io::Result<()> {
    out.write_all(HEADER)?;
    for r in records {
        let bytes = r.encode();
        let len = u32::try_from(bytes.len())
            .map_err(|_| std::io::Error::other("record larger than 4 GiB"))?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(&bytes)?;
    }
    Ok(())
}

/// Reads every record of an export. Checks the layout, not the chain: pass the result to
/// [`verify_records`](crate::verify_records) for that.
pub fn read_export(input: &mut impl Read) -> Result<Vec<Record>, ExportError> {
    let mut bytes = Vec::new();
    input.read_to_end(&mut bytes)?;
    let rest = bytes
        .strip_prefix(HEADER.as_slice())
        .ok_or(ExportError::BadHeader)?;
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < rest.len() {
        let index = records.len();
        let bad = |error| ExportError::Record { index, error };
        let len_bytes: [u8; 4] = rest
            .get(pos..pos + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or(bad(DecodeError::Truncated))?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        pos += 4;
        let body = rest
            .get(pos..pos + len)
            .ok_or(bad(DecodeError::Truncated))?;
        records.push(Record::decode(body).map_err(bad)?);
        pos += len;
    }
    Ok(records)
}
