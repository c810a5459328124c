//! `store export` / `store import`: a versioned, gzip-compressed dump of every
//! stored key and value (envelopes included, so checksums travel with the data).
//!
//! Layout: magic `SEEDLING-LINEAGE`, format version (u32 LE), then gzip of
//! `[u32 key len][key][u32 value len][value]`* and a trailer of the entry count (u64 LE).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use super::{LineageError, LineageStore};

const MAGIC: &[u8; 16] = b"SEEDLING-LINEAGE";
pub const DUMP_FORMAT_VERSION: u32 = 1;
/// Entries end with this marker in place of a key length.
const END: u32 = u32::MAX;

/// What a dump held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpSummary {
    pub entries: u64,
    pub bytes: u64,
}

fn dump_err(path: &Path, reason: impl std::fmt::Display) -> LineageError {
    LineageError::Dump {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl LineageStore {
    /// Writes every entry to `path` (via a temporary file, renamed when complete).
    pub fn export_dump(&self, path: &Path) -> Result<DumpSummary, LineageError> {
        let tmp = path.with_extension("partial");
        let file = File::create(&tmp).map_err(|e| dump_err(&tmp, e))?;
        let mut out = BufWriter::new(file);
        out.write_all(MAGIC).map_err(|e| dump_err(path, e))?;
        out.write_all(&DUMP_FORMAT_VERSION.to_le_bytes())
            .map_err(|e| dump_err(path, e))?;
        let mut gz = GzEncoder::new(out, Compression::fast());
        let mut entries = 0u64;
        for entry in self.raw_entries() {
            let (key, value) = entry?;
            for part in [&key, &value] {
                gz.write_all(&(part.len() as u32).to_le_bytes())
                    .and_then(|_| gz.write_all(part))
                    .map_err(|e| dump_err(path, e))?;
            }
            entries += 1;
        }
        gz.write_all(&END.to_le_bytes())
            .and_then(|_| gz.write_all(&entries.to_le_bytes()))
            .map_err(|e| dump_err(path, e))?;
        let out = gz.finish().map_err(|e| dump_err(path, e))?;
        let file = out.into_inner().map_err(|e| dump_err(path, e.error()))?;
        file.sync_all().map_err(|e| dump_err(path, e))?;
        std::fs::rename(&tmp, path).map_err(|e| dump_err(path, e))?;
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        Ok(DumpSummary { entries, bytes })
    }

    /// Restores a dump into this store, which must be empty. Every envelope
    /// is verified before anything is written.
    pub fn import_dump(&self, path: &Path) -> Result<DumpSummary, LineageError> {
        if !self.is_empty()? {
            return Err(LineageError::NotEmpty {
                dir: self.dir().to_path_buf(),
                n_keys: self.key_count()?,
            });
        }
        let file = File::open(path).map_err(|e| dump_err(path, e))?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut input = BufReader::new(file);
        let mut magic = [0u8; 16];
        input
            .read_exact(&mut magic)
            .map_err(|_| dump_err(path, "not a Seedling lineage dump (too short)"))?;
        if &magic != MAGIC {
            return Err(dump_err(path, "not a Seedling lineage dump (bad magic)"));
        }
        let version = read_u32(&mut input).map_err(|e| dump_err(path, e))?;
        if version != DUMP_FORMAT_VERSION {
            return Err(dump_err(
                path,
                format!("dump format {version}; this build reads {DUMP_FORMAT_VERSION}"),
            ));
        }
        let mut gz = GzDecoder::new(input);
        let mut entries = Vec::new();
        loop {
            let key_len =
                read_u32(&mut gz).map_err(|e| dump_err(path, format!("truncated: {e}")))?;
            if key_len == END {
                break;
            }
            let key = read_exact(&mut gz, key_len)
                .map_err(|e| dump_err(path, format!("truncated: {e}")))?;
            let value_len =
                read_u32(&mut gz).map_err(|e| dump_err(path, format!("truncated: {e}")))?;
            let value = read_exact(&mut gz, value_len)
                .map_err(|e| dump_err(path, format!("truncated: {e}")))?;
            entries.push((key, value));
        }
        let mut count = [0u8; 8];
        gz.read_exact(&mut count)
            .map_err(|e| dump_err(path, format!("truncated trailer: {e}")))?;
        let expected = u64::from_le_bytes(count);
        if expected != entries.len() as u64 {
            return Err(dump_err(
                path,
                format!("trailer says {expected} entries, found {}", entries.len()),
            ));
        }
        // Envelopes that do not open are the dump's fault, not the store's.
        self.import_raw(entries).map_err(|err| match err {
            LineageError::Corrupt { .. } => dump_err(path, err),
            other => other,
        })?;
        // Every envelope may be intact and the graph still broken (an entry
        // cut out with the count to match): the store was empty, so undo.
        let check = self.check()?;
        if !check.is_ok() {
            self.clear()?;
            let shown: Vec<&str> = check.problems.iter().take(3).map(String::as_str).collect();
            return Err(dump_err(
                path,
                format!(
                    "its lineage is not consistent ({} problems: {}); nothing was imported",
                    check.problems.len(),
                    shown.join("; ")
                ),
            ));
        }
        Ok(DumpSummary {
            entries: expected,
            bytes,
        })
    }
}

fn read_u32(input: &mut impl Read) -> std::io::Result<u32> {
    let mut buf = [0u8; 4];
    input.read_exact(&mut buf)?;
    Ok(u32::from_le_bytes(buf))
}

/// Reads `len` bytes. The buffer grows with what actually arrives, so a
/// damaged or hostile length field costs nothing before the data runs out.
fn read_exact(input: &mut impl Read, len: u32) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    input.take(u64::from(len)).read_to_end(&mut buf)?;
    if buf.len() < len as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!(
                "an entry claims {len} bytes; the dump ends after {}",
                buf.len()
            ),
        ));
    }
    Ok(buf)
}
