use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Tests that need another uid's files run only as root (they do in CI).
fn root_or_skip(test: &str) -> bool {
    if own_uid() == 0 {
        return true;
    }
    eprintln!("{test}: skipped: needs root to make files owned by another uid");
    false
}

#[tokio::test]
async fn creates_dirs_sets_modes_replaces_stale_refuses_live_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    for (policy, dir_mode, socket_mode) in [
        (SocketPolicy::workload(), 0o755, 0o777),
        (SocketPolicy::admin(0o770), 0o770, 0o770),
        (SocketPolicy::admin(0o700), 0o770, 0o700),
    ] {
        let top = tmp.path().join(format!("{socket_mode:o}"));
        let path = top.join("a/private/api.sock");
        let (listener, guard) = bind(&path, &policy).await.unwrap();
        assert_eq!(mode(path.parent().unwrap()), dir_mode);
        assert_eq!(mode(&top.join("a")), PARENT_DIR_MODE);
        assert_eq!(mode(&top), PARENT_DIR_MODE);
        assert_eq!(mode(&path), socket_mode);
        let live = bind(&path, &policy).await.unwrap_err();
        assert!(matches!(live, SocketError::InUse { .. }), "{live}");
        assert!(live.to_string().contains("--socketPath"), "{live}");
        // A crash leaves the file behind without a listener: stale, replaced.
        drop(listener);
        std::mem::forget(guard);
        assert!(path.exists());
        let (_listener, guard) = bind(&path, &policy).await.unwrap();
        assert_eq!(guard.path(), path);
        drop(guard);
        assert!(!path.exists());
    }
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let err = bind(&file, &SocketPolicy::workload()).await.unwrap_err();
    assert!(matches!(err, SocketError::NotASocket { .. }), "{err}");
}

#[tokio::test]
async fn a_world_writable_directory_is_refused_naming_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("squat");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o777);
    for policy in [SocketPolicy::workload(), SocketPolicy::admin(0o770)] {
        let err = bind(&dir.join("api.sock"), &policy).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                SocketError::UnsafeDir {
                    problem: DirProblem::Writable { by: "others", .. },
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains("writable by others (mode 0777)"), "{text}");
        assert!(text.contains("chmod"), "{text}");
        assert!(!dir.join("api.sock").exists());
    }
    // Sticky does not make the socket's own directory safe enough.
    chmod(&dir, 0o1777);
    assert!(bind(&dir.join("api.sock"), &SocketPolicy::workload())
        .await
        .is_err());
}

#[tokio::test]
async fn a_group_writable_directory_is_refused_for_the_workload_api_not_the_admin_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("grp");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o770);
    let err = bind(&dir.join("api.sock"), &SocketPolicy::workload())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("writable by its group (mode 0770)"),
        "{err}"
    );
    assert!(err.to_string().contains("chmod 0750"), "{err}");
    let (_l, _g) = bind(&dir.join("api.sock"), &SocketPolicy::admin(0o770))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_parent_writable_by_others_is_refused_unless_sticky() {
    let tmp = tempfile::tempdir().unwrap();
    let parent = tmp.path().join("shared");
    let path = parent.join("mine/api.sock");
    std::fs::create_dir(&parent).unwrap();
    chmod(&parent, 0o777);
    let err = bind(&path, &SocketPolicy::workload()).await.unwrap_err();
    assert!(
        matches!(
            err,
            SocketError::UnsafeDir {
                problem: DirProblem::ParentWritable { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("sticky"), "{err}");
    // Like /tmp: others may write but not rename what is ours.
    chmod(&parent, 0o1777);
    let (_l, _g) = bind(&path, &SocketPolicy::workload()).await.unwrap();
}

#[tokio::test]
async fn a_directory_owned_by_another_uid_is_refused() {
    if !root_or_skip("a_directory_owned_by_another_uid_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nobodys");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    for policy in [SocketPolicy::workload(), SocketPolicy::admin(0o770)] {
        let err = bind(&dir.join("api.sock"), &policy).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(
                err,
                SocketError::UnsafeDir {
                    problem: DirProblem::Owner { owner: 65534, .. },
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains("owned by uid 65534"), "{text}");
    }
    // Above the socket's directory too.
    let err = bind(&dir.join("sub/api.sock"), &SocketPolicy::workload()).await;
    assert!(err.is_err());
}

#[tokio::test]
async fn a_symlink_owned_by_another_uid_on_the_way_is_refused() {
    if !root_or_skip("a_symlink_owned_by_another_uid_on_the_way_is_refused") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    chmod(&real, 0o755);
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let (l, g) = bind(&link.join("api.sock"), &SocketPolicy::workload())
        .await
        .unwrap();
    drop((l, g));
    std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
    let err = bind(&link.join("api.sock"), &SocketPolicy::workload())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("owned by uid 65534"), "{err}");
}
