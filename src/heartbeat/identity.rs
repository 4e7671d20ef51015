//! The identity Heartbeat relies on across restarts, persisted in a
//! directory: `uuid` (16 raw bytes, as Heartbeat's `hb_uuid`) and
//! `generation` (decimal). The generation is bumped and written *before* it
//! is used, so it only ever grows, even across crashes.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::HeartbeatError;

/// A node's persisted identity for this start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// The node's UUID, created once.
    pub uuid: [u8; 16],
    /// This start's generation: larger than any earlier one on this node.
    pub generation: u64,
}

/// Load the identity in `dir` (creating it on first use) and take the next
/// generation: `max(previous + 1, unix_s)`, so that it also grows if the file
/// was lost, as long as the clock is right.
pub fn next_start(dir: &Path, unix_s: u64) -> Result<Identity, HeartbeatError> {
    let io = |what, path: &Path| {
        let path = path.to_path_buf();
        move |source| HeartbeatError::Io { what, path, source }
    };
    fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let uuid_path = dir.join("uuid");
    let uuid = match fs::read(&uuid_path) {
        Ok(bytes) => {
            <[u8; 16]>::try_from(bytes.as_slice()).map_err(|_| HeartbeatError::CorruptIdentity {
                path: uuid_path.clone(),
                why: "not 16 bytes",
            })?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut uuid = [0u8; 16];
            let mut random =
                fs::File::open("/dev/urandom").map_err(io("open", Path::new("/dev/urandom")))?;
            std::io::Read::read_exact(&mut random, &mut uuid)
                .map_err(io("read", Path::new("/dev/urandom")))?;
            // An RFC 4122 version 4 UUID, like uuid_generate().
            uuid[6] = (uuid[6] & 0x0f) | 0x40;
            uuid[8] = (uuid[8] & 0x3f) | 0x80;
            write_atomically(&uuid_path, &uuid)?;
            uuid
        }
        Err(e) => return Err(io("read", &uuid_path)(e)),
    };
    let generation_path = dir.join("generation");
    let previous = match fs::read_to_string(&generation_path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|_| HeartbeatError::CorruptIdentity {
                path: generation_path.clone(),
                why: "not a decimal number",
            })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io("read", &generation_path)(e)),
    };
    let generation = previous.saturating_add(1).max(unix_s);
    write_atomically(&generation_path, format!("{generation}\n").as_bytes())?;
    Ok(Identity { uuid, generation })
}

/// Write `path` so that a crash leaves either the old or the new content.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), HeartbeatError> {
    let tmp: PathBuf = path.with_extension("tmp");
    let io = |what, p: &Path| {
        let path = p.to_path_buf();
        move |source| HeartbeatError::Io { what, path, source }
    };
    let mut file = fs::File::create(&tmp).map_err(io("create", &tmp))?;
    file.write_all(bytes).map_err(io("write", &tmp))?;
    file.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename into", path))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("sync directory", dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_grows_at_every_start_and_uuid_stays() {
        let dir = std::env::temp_dir().join(format!("pphb-identity-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = next_start(&dir, 1000).unwrap();
        assert_eq!(first.generation, 1000);
        let second = next_start(&dir, 1000).unwrap();
        assert_eq!(second.generation, 1001, "same clock: previous + 1");
        let third = next_start(&dir, 5).unwrap();
        assert_eq!(third.generation, 1002, "clock went back: still grows");
        assert_eq!(first.uuid, third.uuid);
        assert_eq!(first.uuid[6] >> 4, 4, "version 4 UUID");
        fs::write(dir.join("generation"), "garbage").unwrap();
        assert!(matches!(
            next_start(&dir, 1),
            Err(HeartbeatError::CorruptIdentity { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
