//! User and group names from `/etc/passwd` and `/etc/group` (the files only: users known to
//! NSS modules such as LDAP have no name selector, only `uid`/`gid`).
//!
//! Each file is parsed once into an id → name map and kept with the identity of the version
//! parsed (device, inode, size, modification and change times). A call costs one `stat`; the
//! file is read and parsed again only when that identity changes, which every way of editing
//! it (`useradd`, `vipw`, a rename over it, an in-place write) does. File times have a coarse
//! granularity, so a write in the same tick as our read could leave them unchanged: a parse
//! of a file changed less than [`SETTLE`] before it was read is not trusted, and the file is
//! read again on the next call (git's "racily clean" rule). The result is the same as reading
//! the file on every call.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest account file read, bytes; beyond it the rest is ignored.
pub(crate) const MAX_ACCOUNTS_FILE: u64 = 16 * 1024 * 1024;

/// How long after its last change a file's times are trusted to reflect any further write:
/// beyond the coarsest timestamp granularity of common filesystems (1 to 2 s).
pub(crate) const SETTLE: Duration = Duration::from_secs(3);

/// The names of one accounts file, by id: for each id the first entry naming it, as
/// `getpwuid`/`getgrgid` pick it. Bounded by the file, itself bounded by
/// [`MAX_ACCOUNTS_FILE`].
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Accounts {
    names: HashMap<u32, Box<str>>,
}

impl Accounts {
    /// Parses `passwd` or `group` syntax (`name:password:id:...`). Comments, NIS lines
    /// (`+`/`-`), lines with an empty name or an id that is not a number are skipped.
    pub(crate) fn parse(text: &str) -> Self {
        let mut names = HashMap::new();
        for line in text.lines() {
            if let Some((name, id)) = parse_line(line) {
                names.entry(id).or_insert_with(|| name.into());
            }
        }
        Self { names }
    }

    /// The name of `id`, if the file has one.
    pub(crate) fn name(&self, id: u32) -> Option<&str> {
        self.names.get(&id).map(|n| &**n)
    }
}

fn parse_line(line: &str) -> Option<(&str, u32)> {
    if line.starts_with('#') || line.starts_with('+') || line.starts_with('-') {
        return None;
    }
    let mut fields = line.split(':');
    let name = fields.next()?;
    let _password = fields.next()?;
    let id: u32 = fields.next()?.trim().parse().ok()?;
    (!name.is_empty()).then_some((name, id))
}

/// What identifies a version of a file well enough to reuse its parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
}

impl FileStamp {
    /// The later of its change and modification times, Unix nanoseconds.
    fn last_change_nanos(&self) -> i64 {
        let nanos = |s: i64, ns: i64| s.saturating_mul(1_000_000_000).saturating_add(ns);
        nanos(self.mtime, self.mtime_nsec).max(nanos(self.ctime, self.ctime_nsec))
    }

    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
        }
    }
}

/// A parse and the version of the file it is of (`None`: the file was missing).
#[derive(Debug)]
struct Parsed {
    stamp: Option<FileStamp>,
    /// Whether the file had been left alone for [`SETTLE`] when it was read, so that its
    /// stamp is known to change with any later write.
    settled: bool,
    accounts: Arc<Accounts>,
}

/// One accounts file and its latest parse. A missing file reads as empty (a minimal
/// container may have none).
#[derive(Debug)]
pub(crate) struct AccountsFile {
    path: PathBuf,
    cached: Mutex<Option<Parsed>>,
}

impl AccountsFile {
    /// The file at `path`, not read yet.
    pub(crate) fn new(path: PathBuf) -> Self {
        Self {
            path,
            cached: Mutex::new(None),
        }
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's names as it is now (`now`: Unix nanoseconds): one `stat`, and a read only
    /// if it changed since the last one.
    pub(crate) fn load(&self, now: i64) -> std::io::Result<Arc<Accounts>> {
        let stamp = match std::fs::metadata(&self.path) {
            Ok(meta) => Some(FileStamp::of(&meta)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        if let Some(p) = &*self.lock() {
            if p.settled && p.stamp == stamp {
                return Ok(p.accounts.clone());
            }
        }
        // Read outside the lock: callers of an unchanged file are never held up by a reread.
        // The stamp is taken before the read, so a write between the two leaves a stamp
        // older than the content: the next call sees a different stamp and reads again.
        let accounts = Arc::new(Accounts::parse(&read_bounded(&self.path)?));
        let settle = i64::try_from(SETTLE.as_nanos()).unwrap_or(i64::MAX);
        let settled = stamp.is_none_or(|s| s.last_change_nanos() < now.saturating_sub(settle));
        *self.lock() = Some(Parsed {
            stamp,
            settled,
            accounts: accounts.clone(),
        });
        Ok(accounts)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Parsed>> {
        // A panic while holding the lock leaves a valid value: keep using it.
        self.cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The file's text, at most [`MAX_ACCOUNTS_FILE`] bytes; a missing file reads as empty.
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_ACCOUNTS_FILE).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const PASSWD: &str = "\
# comment:x:5:5
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
broken line
:x:7:7::/:/bin/sh
alice:x:1000:1000:Alice,,,:/home/alice:/bin/bash
alias:x:1000:1000::/home/alias:/bin/bash
+nis:x:1001:1001:::
";

    /// The lookup as `getpwuid` does it, line by line: the reference the parse must match.
    fn name_for_id(text: &str, id: u32) -> Option<&str> {
        text.lines()
            .find_map(|line| parse_line(line).filter(|(_, i)| *i == id).map(|(n, _)| n))
    }

    #[test]
    fn first_match_wins_and_junk_is_skipped() {
        let a = Accounts::parse(PASSWD);
        assert_eq!(a.name(0), Some("root"));
        assert_eq!(a.name(1000), Some("alice"));
        assert_eq!(a.name(5), None);
        assert_eq!(a.name(7), None);
        assert_eq!(a.name(1001), None);
        assert_eq!(a.name(4242), None);
        assert_eq!(
            Accounts::parse("staff:x:50:alice,bob\n").name(50),
            Some("staff")
        );
        assert_eq!(
            Accounts::parse(":x:9:9\nnine:x:9:9\n").name(9),
            Some("nine"),
            "an entry without a name does not hide a later one"
        );
    }

    /// Unix nanoseconds of `d` after the epoch.
    fn at(d: Duration) -> i64 {
        i64::try_from(d.as_nanos()).unwrap()
    }

    /// The file's last change, Unix nanoseconds.
    fn changed_at(path: &Path) -> i64 {
        FileStamp::of(&std::fs::metadata(path).unwrap()).last_change_nanos()
    }

    #[test]
    fn missing_file_reads_empty() {
        assert_eq!(
            read_bounded(Path::new("/nonexistent/tessera/passwd")).unwrap(),
            ""
        );
        let f = AccountsFile::new(PathBuf::from("/nonexistent/tessera/passwd"));
        assert_eq!(*f.load(0).unwrap(), Accounts::default());
    }

    #[test]
    fn an_unchanged_file_is_parsed_once_and_a_changed_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "alice:x:1000:1000::/:/bin/sh\n").unwrap();
        // Long after every write below: each stamp is settled when read.
        let later = changed_at(&path) + at(Duration::from_secs(3600));
        let f = AccountsFile::new(path.clone());
        let first = f.load(later).unwrap();
        assert_eq!(first.name(1000), Some("alice"));
        assert!(
            Arc::ptr_eq(&first, &f.load(later).unwrap()),
            "an unchanged file is not read again"
        );

        // Written in place, same length, at a later time.
        std::fs::write(&path, "bobby:x:1000:1000::/:/bin/sh\n").unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(2_000_000_000))
            .unwrap();
        drop(file);
        assert_eq!(f.load(later).unwrap().name(1000), Some("bobby"));

        // Replaced by a rename, as `vipw` and `useradd` do: a new inode.
        let tmp = dir.path().join("passwd.new");
        std::fs::write(&tmp, "carol:x:1000:1000::/:/bin/sh\ndave:x:1001:1:::\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let after = f.load(later).unwrap();
        assert_eq!(after.name(1000), Some("carol"));
        assert_eq!(after.name(1001), Some("dave"));

        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            f.load(later).unwrap().name(1000),
            None,
            "a removed file reads as empty"
        );
        std::fs::write(&path, "erin:x:1000:1000::/:/bin/sh\n").unwrap();
        assert_eq!(f.load(later).unwrap().name(1000), Some("erin"));
    }

    #[test]
    fn a_file_changed_just_before_it_was_read_is_read_again_until_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("group");
        std::fs::write(&path, "staff:x:50:\n").unwrap();
        let now = changed_at(&path);
        let f = AccountsFile::new(path.clone());
        let first = f.load(now).unwrap();
        // A write in the same clock tick may leave every time unchanged: not trusted yet.
        assert!(!Arc::ptr_eq(&first, &f.load(now).unwrap()));
        let settled = now + at(SETTLE) + 1;
        let read = f.load(settled).unwrap();
        assert!(Arc::ptr_eq(&read, &f.load(settled).unwrap()));
        assert_eq!(read.name(50), Some("staff"));
    }

    proptest! {
        #[test]
        fn the_parse_answers_as_the_line_by_line_lookup(text in "\\PC{0,400}", id in 0u32..5000) {
            let got = Accounts::parse(&text);
            prop_assert_eq!(got.name(id), name_for_id(&text, id));
            if let Some(name) = got.name(id) {
                prop_assert!(text.contains(name));
                prop_assert!(!name.contains(':'));
            }
        }

        #[test]
        fn every_id_in_the_text_answers_as_the_lookup(
            lines in proptest::collection::vec(("[a-z]{0,3}", 0u32..8), 0..20)
        ) {
            let text: String = lines.iter().map(|(n, id)| format!("{n}:x:{id}:\n")).collect();
            let got = Accounts::parse(&text);
            for id in 0..8 {
                prop_assert_eq!(got.name(id), name_for_id(&text, id));
            }
        }
    }
}
