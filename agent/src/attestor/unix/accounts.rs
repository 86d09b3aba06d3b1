//! User and group names from `/etc/passwd` and `/etc/group` (the files only: users known to
//! NSS modules such as LDAP have no name selector, only `uid`/`gid`).

use std::io::Read;
use std::path::Path;

/// Largest account file read, bytes; beyond it the rest is ignored.
pub(crate) const MAX_ACCOUNTS_FILE: u64 = 16 * 1024 * 1024;

/// The name of the first entry whose id field (the third) is `id`, in `passwd` or `group`
/// syntax (`name:password:id:...`), as `getpwuid`/`getgrgid` pick it.
pub(crate) fn name_for_id(text: &str, id: u32) -> Option<&str> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let field_id: u32 = fields.next()?.trim().parse().ok()?;
            (field_id == id && !name.is_empty()).then_some(name)
        })
}

/// The file's text, at most [`MAX_ACCOUNTS_FILE`] bytes; a missing file reads as empty (a
/// minimal container may have none).
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

    #[test]
    fn first_match_wins_and_junk_is_skipped() {
        assert_eq!(name_for_id(PASSWD, 0), Some("root"));
        assert_eq!(name_for_id(PASSWD, 1000), Some("alice"));
        assert_eq!(name_for_id(PASSWD, 5), None);
        assert_eq!(name_for_id(PASSWD, 7), None);
        assert_eq!(name_for_id(PASSWD, 1001), None);
        assert_eq!(name_for_id(PASSWD, 4242), None);
        assert_eq!(name_for_id("staff:x:50:alice,bob\n", 50), Some("staff"));
    }

    #[test]
    fn missing_file_reads_empty() {
        assert_eq!(
            read_bounded(Path::new("/nonexistent/tessera/passwd")).unwrap(),
            ""
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_only_returns_names_from_the_text(text in "\\PC{0,400}", id in 0u32..5000) {
            if let Some(name) = name_for_id(&text, id) {
                prop_assert!(text.contains(name));
                prop_assert!(!name.contains(':'));
            }
        }
    }
}
