//! Reading configuration files: the main file and the `*.conf` files of an `include_dir`.

use std::path::{Path, PathBuf};

use super::ConfigError;

pub(super) fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// The `*.conf` files of `dir`, sorted as mosquitto sorts them (case-insensitively).
pub(super) fn conf_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let err = |error| ConfigError::Read {
        path: dir.to_path_buf(),
        error,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() > ".conf".len() && name.ends_with(".conf") {
            files.push(entry.path());
        }
    }
    files.sort_by_key(|p| {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        (name.to_ascii_lowercase(), name)
    });
    Ok(files)
}
