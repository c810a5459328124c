//! Checks a model file before llama.cpp sees it, so a bad path or a
//! non-GGUF file is a named error rather than a crash inside C++.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The four bytes every GGUF file starts with.
const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// File name of the default model inside the model cache directory.
pub const DEFAULT_MODEL_FILE: &str = "qwen2.5-coder-0.5b-instruct.gguf";

/// Where the default model lives: `$SEEDLING_MODEL` if set, else
/// `$SEEDLING_MODEL_DIR/<file>`, else `~/.cache/seedling/models/<file>`
/// (the place `scripts/fetch-model` writes to).
pub fn default_model_path() -> PathBuf {
    if let Some(path) = std::env::var_os("SEEDLING_MODEL").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let dir = std::env::var_os("SEEDLING_MODEL_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            home.join(".cache/seedling/models")
        });
    dir.join(DEFAULT_MODEL_FILE)
}

/// Why a model file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error(
        "model file {path} not found (fetch the default model with scripts/fetch-model, or pass --model PATH)"
    )]
    Missing { path: PathBuf },
    #[error("model file {path} cannot be read")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a GGUF file (it starts with {found:02x?}, expected the bytes \"GGUF\")")]
    NotGguf { path: PathBuf, found: Vec<u8> },
    #[error("GGUF file {path} has version {version}; llama.cpp reads versions 2 and 3")]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error(
        "model file {path} has SHA-256 {actual}, expected {expected} (re-fetch it; never use a file that fails its checksum)"
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// Hex SHA-256 of a file, streamed (models are hundreds of megabytes).
pub fn sha256_file(path: &Path) -> Result<String, ModelFileError> {
    use sha2::Digest;
    let unreadable = |source| ModelFileError::Unreadable {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(unreadable)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(unreadable)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Verifies a file against an expected hex SHA-256.
pub fn verify_sha256(path: &Path, expected: &str) -> Result<(), ModelFileError> {
    let actual = sha256_file(path)?;
    if actual.eq_ignore_ascii_case(expected.trim()) {
        Ok(())
    } else {
        Err(ModelFileError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.trim().to_lowercase(),
            actual,
        })
    }
}

/// Verifies that `path` exists and carries a GGUF v2/v3 header.
pub fn check_gguf_header(path: &Path) -> Result<(), ModelFileError> {
    let mut file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ModelFileError::Missing {
            path: path.to_path_buf(),
        },
        _ => ModelFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let mut header = [0u8; 8];
    let n_read =
        read_up_to(&mut file, &mut header).map_err(|source| ModelFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
    if n_read < 8 || &header[..4] != GGUF_MAGIC {
        return Err(ModelFileError::NotGguf {
            path: path.to_path_buf(),
            found: header[..n_read.min(4)].to_vec(),
        });
    }
    let version = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if !(2..=3).contains(&version) {
        return Err(ModelFileError::UnsupportedVersion {
            path: path.to_path_buf(),
            version,
        });
    }
    Ok(())
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n_read = 0;
    while n_read < buf.len() {
        match file.read(&mut buf[n_read..])? {
            0 => break,
            n => n_read += n,
        }
    }
    Ok(n_read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn missing_file_is_named() {
        let err = check_gguf_header(Path::new("/nonexistent/model.gguf")).unwrap_err();
        assert!(matches!(err, ModelFileError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/model.gguf"));
    }

    #[test]
    fn text_file_is_not_gguf() {
        let file = write_temp(b"hello world, not a model");
        let err = check_gguf_header(file.path()).unwrap_err();
        assert!(matches!(err, ModelFileError::NotGguf { .. }), "{err}");
    }

    #[test]
    fn short_file_is_not_gguf() {
        let file = write_temp(b"GG");
        assert!(matches!(
            check_gguf_header(file.path()),
            Err(ModelFileError::NotGguf { .. })
        ));
    }

    #[test]
    fn checksum_mismatch_names_both_digests() {
        let file = write_temp(b"abc");
        // SHA-256("abc")
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(file.path()).unwrap(), abc);
        verify_sha256(file.path(), &abc.to_uppercase()).unwrap();
        let err = verify_sha256(file.path(), &"0".repeat(64)).unwrap_err();
        assert!(err.to_string().contains(abc), "{err}");
    }

    #[test]
    fn version_one_is_refused_and_three_accepted() {
        let file = write_temp(b"GGUF\x01\x00\x00\x00rest");
        assert!(matches!(
            check_gguf_header(file.path()),
            Err(ModelFileError::UnsupportedVersion { version: 1, .. })
        ));
        let file = write_temp(b"GGUF\x03\x00\x00\x00rest");
        check_gguf_header(file.path()).unwrap();
    }
}
