//! opctl's config file: `apikey:` (and optionally `server:`), YAML, at `$OPCTL_CONFIG` or
//! `~/.config/opctl/config.yaml` (`$XDG_CONFIG_HOME` respected). It holds a credential, so it
//! is refused unless only its owner can read it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::args::CONFIG_ENV;

/// What the config file may say.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub apikey: Option<String>,
    pub server: Option<String>,
}

/// Where the config file is looked for.
pub fn default_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CONFIG_ENV) {
        return Some(PathBuf::from(path));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("opctl").join("config.yaml"))
}

/// Reads the config file at `path`; none there is an empty config.
pub fn load(path: &Path) -> Result<ConfigFile> {
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ConfigFile::default()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "config file {} can be read by others (mode {mode:o}); it holds your API key: run chmod 600 {}",
            path.display(),
            path.display()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    if text.trim().is_empty() {
        return Ok(ConfigFile::default());
    }
    serde_norway::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    #[test]
    fn an_owner_only_file_gives_its_key_and_server() {
        let dir = tempfile::tempdir().expect("dir");
        let path = write(dir.path(), "apikey: opk_x\nserver: http://h:1\n", 0o600);
        let config = load(&path).expect("read");
        assert_eq!(config.apikey.as_deref(), Some("opk_x"));
        assert_eq!(config.server.as_deref(), Some("http://h:1"));
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().expect("dir");
        let path = write(dir.path(), "apikey: opk_x\n", 0o644);
        let error = load(&path).expect_err("refused").to_string();
        assert!(
            error.contains("mode 644") && error.contains("chmod 600"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_file_is_an_empty_config_and_an_unknown_field_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        assert_eq!(
            load(&dir.path().join("absent.yaml")).expect("empty"),
            ConfigFile::default()
        );
        let path = write(dir.path(), "apikee: typo\n", 0o600);
        assert!(format!("{:#}", load(&path).expect_err("refused")).contains("apikee"));
    }
}
