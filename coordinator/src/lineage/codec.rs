//! The envelope of every stored value: a format version and a CRC-32 over key
//! and payload, checked on every read so a corrupt value is reported with its
//! key instead of being decoded into nonsense.

use super::LineageError;
use super::keys::printable;

/// Bump when the payload encoding changes; readers refuse what they do not know.
pub const FORMAT_VERSION: u8 = 1;
const HEADER: usize = 5;

fn checksum(key: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(key);
    hasher.update(payload);
    hasher.finalize()
}

pub fn seal(key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(HEADER + payload.len());
    value.push(FORMAT_VERSION);
    value.extend_from_slice(&checksum(key, payload).to_le_bytes());
    value.extend_from_slice(payload);
    value
}

/// The payload of a stored value, after checking version and checksum.
pub fn open<'v>(key: &[u8], value: &'v [u8]) -> Result<&'v [u8], LineageError> {
    let corrupt = |reason: String| LineageError::Corrupt {
        key: printable(key),
        reason,
    };
    if value.len() < HEADER {
        return Err(corrupt(format!(
            "value of {} bytes has no header",
            value.len()
        )));
    }
    if value[0] != FORMAT_VERSION {
        return Err(corrupt(format!(
            "format version {} (this build reads {FORMAT_VERSION})",
            value[0]
        )));
    }
    let stored = u32::from_le_bytes([value[1], value[2], value[3], value[4]]);
    let payload = &value[HEADER..];
    let computed = checksum(key, payload);
    if stored != computed {
        return Err(corrupt(format!(
            "checksum {stored:08x} does not match content {computed:08x}"
        )));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open() {
        let value = seal(b"Nn-1", b"{\"a\":1}");
        assert_eq!(open(b"Nn-1", &value).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn any_flipped_byte_is_caught_and_names_the_key() {
        let value = seal(b"Nn-1", b"payload");
        for idx in 0..value.len() {
            let mut bad = value.clone();
            bad[idx] ^= 0x40;
            let err = open(b"Nn-1", &bad).unwrap_err().to_string();
            assert!(err.contains("Nn-1"), "{err}");
        }
        // a value moved under another key is caught too
        assert!(open(b"Nn-2", &value).is_err());
        assert!(open(b"Nn-1", &value[..3]).is_err());
    }
}
