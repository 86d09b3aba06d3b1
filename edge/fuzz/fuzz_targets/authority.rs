//! Fuzzes the HTTP/2 `:authority` rewriter that sits between a Unix-socket client and h2.
//! The first byte picks how the rest (a client byte stream) is cut into reads and how much
//! is taken at a time. Properties: no input panics; the output does not depend on how the
//! input was cut or drained; the 24-byte connection preface passes unchanged; the fix is
//! idempotent (its output goes through it unchanged: every `:authority` it leaves is one h2
//! accepts, and its framing is stable); output grows by a bounded amount; and what one
//! connection holds stays within about two frames, as the module promises.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_edge::authority::{AuthorityFix, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE};

const PREFACE_LEN: usize = 24;

/// Runs `input` through a fresh fix, fed `step` bytes at a time and drained `take` at a time.
fn run(input: &[u8], step: usize, take: usize) -> Vec<u8> {
    let bound = MAX_FRAME_SIZE as usize + 9 + MAX_HEADER_LIST_SIZE as usize + 64;
    let mut fix = AuthorityFix::default();
    let mut out = Vec::new();
    let mut buf = vec![0u8; take];
    for chunk in input.chunks(step) {
        fix.feed(chunk);
        loop {
            let n = fix.take(&mut buf);
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert!(!fix.has_ready());
        assert!(
            fix.held() <= bound,
            "holds {} bytes, over {bound}",
            fix.held()
        );
    }
    fix.finish();
    loop {
        let n = fix.take(&mut buf);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(fix.held(), 0, "finish hands on everything");
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&shape, input)) = data.split_first() else {
        return;
    };
    let whole = run(input, input.len().max(1), 1 << 16);
    let step = usize::from(shape & 0x0f) + 1;
    let take = usize::from(shape >> 4) * 3 + 1;
    assert_eq!(
        run(input, step, take),
        whole,
        "cut into {step}-byte reads, {take}-byte takes"
    );

    let p = input.len().min(PREFACE_LEN);
    assert_eq!(
        whole.get(..p),
        Some(&input[..p]),
        "the preface passes unchanged"
    );
    // Raw replacements of Huffman-coded values (at most 8/5 longer) and re-framing.
    assert!(
        whole.len() <= input.len() * 2 + 64,
        "{} bytes in, {} out",
        input.len(),
        whole.len()
    );

    assert_eq!(
        run(&whole, whole.len().max(1), 1 << 16),
        whole,
        "the fix is idempotent"
    );
});
