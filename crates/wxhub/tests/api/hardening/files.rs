//! The SQLite file holds live tokens: whatever permissions it had, the hub leaves it (and its
//! `-wal` and `-shm` files) readable by its owner only.

#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use wxhub::store::sqlite::SqliteStore;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn companion(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[test]
fn an_existing_world_readable_database_is_made_private_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wxhub.db");
    std::fs::write(&path, b"").unwrap();
    chmod(&path, 0o644);

    let first = SqliteStore::open(&path).expect("opens");
    assert_eq!(mode(&path), 0o600, "database file");

    // While it is open, its WAL files exist; loosen them as a careless copy or umask would.
    let wal = companion(&path, "-wal");
    let shm = companion(&path, "-shm");
    assert!(wal.exists() && shm.exists(), "WAL mode files exist");
    for file in [&path, &wal, &shm] {
        chmod(file, 0o644);
    }
    let second = SqliteStore::open(&path).expect("opens again");
    for file in [&path, &wal, &shm] {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    drop((first, second));
}
