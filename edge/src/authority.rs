//! Making gRPC servers on Unix sockets reachable from grpc clients that name the socket by its
//! path: grpc-go (`grpcurl -plaintext -unix`), grpc-python (py-spiffe) and grpc-java send the
//! socket's path (`/tmp/.../api.sock`) as the HTTP/2 `:authority`. The `h2` crate under tonic
//! resets every such stream (PROTOCOL_ERROR), while SPIRE's Go server accepts it; on a Unix
//! socket the authority means nothing. So the client's bytes pass through [`AuthorityFix`]
//! before h2 reads them: in every header block, an `:authority` value that is not a valid URI
//! authority is replaced by one of the same decoded length made of letters
//! (`localhosxxx...`), written as a raw string. The length is kept so that the HPACK dynamic
//! tables of the client and of h2, which size each entry by its decoded length, stay in step.
//! Everything else passes through byte for byte; a header block this parser does not
//! understand is passed on unchanged (h2 then judges it).
//!
//! Bounds: the fix holds no more than h2 itself would. A HEADERS or CONTINUATION frame longer
//! than [`MAX_FRAME_SIZE`] (h2's SETTINGS_MAX_FRAME_SIZE, which the servers keep) is not
//! waited for: its header goes straight to h2, which answers GOAWAY FRAME_SIZE_ERROR. A header
//! block growing past [`MAX_HEADER_LIST_SIZE`] (the header-list limit the servers set on h2;
//! a block's HPACK encoding is no longer than the list it decodes to, give or take a few
//! bytes) is handed on as gathered and the fix steps aside for the rest of the connection, so
//! h2's own limits (header-list size, CONTINUATION flood) apply to it. So one connection holds
//! at most about two frames here, whatever the client sends.

use std::collections::VecDeque;

/// The HTTP/2 client connection preface.
const PREFACE_LEN: usize = 24;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Largest frame h2 accepts (SETTINGS_MAX_FRAME_SIZE, h2's default): the servers that use the
/// fix must not raise it.
pub const MAX_FRAME_SIZE: u32 = 16_384;
/// Largest header list the servers accept (hyper's default, set explicitly on both servers):
/// also the most bytes of one header block the fix gathers before stepping aside.
pub const MAX_HEADER_LIST_SIZE: u32 = 16_384;
const MAX_FRAME: usize = MAX_FRAME_SIZE as usize;
const MAX_BLOCK: usize = MAX_HEADER_LIST_SIZE as usize;

/// The client→server byte stream of one connection, with `:authority` values fixed.
#[derive(Debug, Default)]
pub struct AuthorityFix {
    preface_seen: usize,
    /// Bytes received, not yet processed.
    pending: Vec<u8>,
    /// Bytes ready for h2.
    ready: VecDeque<u8>,
    /// Payload bytes of the current non-header frame still to pass through.
    passing: usize,
    /// A header block being gathered: (stream id, flags of its HEADERS frame, priority
    /// fields, fragments so far).
    block: Option<(u32, u8, Vec<u8>, Vec<u8>)>,
    /// Set once the stream is not what this parser expects: everything passes through.
    off: bool,
}

impl AuthorityFix {
    /// Takes bytes read from the client.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.off {
            self.ready.extend(bytes);
            return;
        }
        self.pending.extend_from_slice(bytes);
        self.process();
    }

    /// Moves up to `out.len()` processed bytes into `out`; returns how many.
    pub fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.ready.len());
        for (slot, byte) in out.iter_mut().zip(self.ready.drain(..n)) {
            *slot = byte;
        }
        n
    }

    /// Bytes held now (received and not yet taken): what one connection costs here.
    pub fn held(&self) -> usize {
        self.pending.len()
            + self.ready.len()
            + self
                .block
                .as_ref()
                .map_or(0, |(_, _, priority, fragments)| {
                    priority.len() + fragments.len()
                })
    }

    /// Whether processed bytes are waiting.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The client closed: whatever is held goes out as it came.
    pub fn finish(&mut self) {
        // An unfinished header block goes out as gathered, like any other held byte: h2
        // then sees the connection end where the client ended it.
        self.give_up_with_block();
    }

    fn give_up(&mut self) {
        self.off = true;
        self.ready.extend(self.pending.drain(..));
    }

    fn process(&mut self) {
        let mut at = 0;
        if self.preface_seen < PREFACE_LEN {
            let n = (PREFACE_LEN - self.preface_seen).min(self.pending.len());
            self.ready.extend(&self.pending[..n]);
            self.preface_seen += n;
            at = n;
        }
        loop {
            if self.passing > 0 {
                let n = self.passing.min(self.pending.len() - at);
                self.ready.extend(&self.pending[at..at + n]);
                self.passing -= n;
                at += n;
                if self.passing > 0 {
                    break;
                }
            }
            let Some(header) = self.pending.get(at..at + 9) else {
                break;
            };
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            let (kind, flags) = (header[3], header[4]);
            let stream =
                u32::from_be_bytes([header[5], header[6], header[7], header[8]]) & 0x7fff_ffff;
            if kind != HEADERS && kind != CONTINUATION {
                if self.block.is_some() {
                    // HTTP/2 forbids other frames inside a header block: not ours to judge.
                    self.pending.drain(..at);
                    return self.give_up_with_block();
                }
                self.ready.extend(header);
                at += 9;
                self.passing = len;
                continue;
            }
            if len > MAX_FRAME {
                // Not waited for: h2 refuses the frame from its header alone.
                self.pending.drain(..at);
                return self.give_up_with_block();
            }
            let Some(payload) = self.pending.get(at + 9..at + 9 + len) else {
                break;
            };
            let payload = payload.to_vec();
            if !self.frame(kind, flags, stream, &payload) {
                // This frame stays in `pending` and goes out after what was gathered.
                self.pending.drain(..at);
                return self.give_up_with_block();
            }
            at += 9 + len;
        }
        self.pending.drain(..at);
    }

    /// Passes on a block held so far, unchanged, then everything after it.
    fn give_up_with_block(&mut self) {
        if let Some((stream, flags, priority, fragments)) = self.block.take() {
            // Re-frame what was gathered as HEADERS (+ CONTINUATION) without END_HEADERS, each
            // within h2's frame size, so that what follows continues it as the client meant.
            let mut payload = priority;
            payload.extend(fragments);
            let (first, mut rest) = payload.split_at(payload.len().min(MAX_FRAME));
            emit_frame(
                &mut self.ready,
                HEADERS,
                flags & !END_HEADERS & !PADDED,
                stream,
                first,
            );
            while !rest.is_empty() {
                let (part, tail) = rest.split_at(rest.len().min(MAX_FRAME));
                emit_frame(&mut self.ready, CONTINUATION, 0, stream, part);
                rest = tail;
            }
        }
        self.give_up();
    }

    /// Takes one HEADERS or CONTINUATION frame; false if the stream makes no sense to us.
    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> bool {
        if kind == HEADERS {
            if self.block.is_some() {
                return false;
            }
            let mut body = payload;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let Some((&p, rest)) = body.split_first() else {
                    return false;
                };
                pad = usize::from(p);
                body = rest;
            }
            let mut priority = Vec::new();
            if flags & PRIORITY != 0 {
                let Some(p) = body.get(..5) else {
                    return false;
                };
                priority = p.to_vec();
                body = &body[5..];
            }
            let Some(fragment) = body.len().checked_sub(pad).map(|n| &body[..n]) else {
                return false;
            };
            self.block = Some((stream, flags, priority, fragment.to_vec()));
        } else {
            match &mut self.block {
                Some((s, _, _, fragments)) if *s == stream => {
                    if fragments.len() + payload.len() > MAX_BLOCK {
                        return false;
                    }
                    fragments.extend_from_slice(payload);
                }
                _ => return false,
            }
        }
        if flags & END_HEADERS != 0 {
            if let Some((stream, first_flags, priority, fragments)) = self.block.take() {
                let block = rewrite_block(&fragments).unwrap_or(fragments);
                let keep = first_flags & (END_STREAM | PRIORITY);
                let mut first = priority;
                let room = MAX_FRAME - first.len();
                let (head, mut rest) = block.split_at(block.len().min(room));
                first.extend_from_slice(head);
                let end = if rest.is_empty() { END_HEADERS } else { 0 };
                emit_frame(&mut self.ready, HEADERS, keep | end, stream, &first);
                while !rest.is_empty() {
                    let (part, tail) = rest.split_at(rest.len().min(MAX_FRAME));
                    rest = tail;
                    let end = if rest.is_empty() { END_HEADERS } else { 0 };
                    emit_frame(&mut self.ready, CONTINUATION, end, stream, part);
                }
            }
        }
        true
    }
}

fn emit_frame(out: &mut VecDeque<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len();
    out.extend([(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
}

/// An HPACK integer with an `n`-bit prefix at `block[*at]` (RFC 7541 §5.1).
fn integer(block: &[u8], at: &mut usize, prefix_bits: u32) -> Option<usize> {
    let max = (1usize << prefix_bits) - 1;
    let first = usize::from(*block.get(*at)?) & max;
    *at += 1;
    if first < max {
        return Some(first);
    }
    let mut value = max;
    for shift in (0..35).step_by(7) {
        let b = *block.get(*at)?;
        *at += 1;
        value = value.checked_add(usize::from(b & 0x7f) << shift)?;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// A string literal at `block[*at]`: (Huffman-coded?, its bytes).
fn string<'a>(block: &'a [u8], at: &mut usize) -> Option<(bool, &'a [u8])> {
    let huffman = *block.get(*at)? & 0x80 != 0;
    let len = integer(block, at, 7)?;
    let bytes = block.get(*at..at.checked_add(len)?)?;
    *at += len;
    Some((huffman, bytes))
}

fn push_integer(out: &mut Vec<u8>, first_bits: u8, prefix_bits: u32, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first_bits | value as u8);
        return;
    }
    out.push(first_bits | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The block with each unusable `:authority` value replaced; `None` if nothing changed or the
/// block does not parse.
pub(crate) fn rewrite_block(block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len() + 16);
    let mut at = 0;
    let mut changed = false;
    while at < block.len() {
        let start = at;
        let b = block[at];
        let prefix = if b & 0x80 != 0 {
            integer(block, &mut at, 7)?;
            out.extend_from_slice(&block[start..at]);
            continue;
        } else if b & 0xc0 == 0x40 {
            6
        } else if b & 0xe0 == 0x20 {
            integer(block, &mut at, 5)?;
            out.extend_from_slice(&block[start..at]);
            continue;
        } else {
            4
        };
        let index = integer(block, &mut at, prefix)?;
        let is_authority = if index == 0 {
            let (huffman, name) = string(block, &mut at)?;
            !huffman && name == b":authority"
        } else {
            // Static table entry 1 is `:authority`.
            index == 1
        };
        let name_end = at;
        let (huffman, value) = string(block, &mut at)?;
        out.extend_from_slice(&block[start..name_end]);
        let replacement = if is_authority {
            let decoded = if huffman {
                let mut d = Vec::new();
                httlib_huffman::decode(value, &mut d, httlib_huffman::DecoderSpeed::FourBits)
                    .ok()?;
                d
            } else {
                value.to_vec()
            };
            if usable(&decoded) {
                None
            } else {
                Some(same_length(decoded.len()))
            }
        } else {
            None
        };
        match replacement {
            Some(text) if !text.is_empty() => {
                push_integer(&mut out, 0, 7, text.len());
                out.extend_from_slice(&text);
                changed = true;
            }
            _ => out.extend_from_slice(&block[name_end..at]),
        }
    }
    changed.then_some(out)
}

/// Whether h2 accepts `value` as an authority.
fn usable(value: &[u8]) -> bool {
    value.is_empty() || http::uri::Authority::try_from(value).is_ok()
}

/// A valid authority of exactly `len` bytes.
fn same_length(len: usize) -> Vec<u8> {
    b"localhost"
        .iter()
        .copied()
        .chain(std::iter::repeat(b'x'))
        .take(len)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn huffman(text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        httlib_huffman::encode(text, &mut out).unwrap();
        out
    }

    /// `:authority` (static index 1) with incremental indexing, then `:path` indexed (4).
    fn block(value: &[u8], coded: bool) -> Vec<u8> {
        let mut b = vec![0x41];
        let bytes = if coded {
            huffman(value)
        } else {
            value.to_vec()
        };
        push_integer(&mut b, if coded { 0x80 } else { 0 }, 7, bytes.len());
        b.extend(bytes);
        b.push(0x84);
        b
    }

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = VecDeque::new();
        emit_frame(&mut out, kind, flags, stream, payload);
        out.into_iter().collect()
    }

    fn run(input: &[u8], step: usize) -> Vec<u8> {
        let mut fix = AuthorityFix::default();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            fix.feed(chunk);
            let mut buf = [0u8; 7];
            loop {
                let n = fix.take(&mut buf);
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
        fix.finish();
        let mut rest = vec![0u8; 1 << 16];
        let n = fix.take(&mut rest);
        out.extend_from_slice(&rest[..n]);
        out
    }

    #[test]
    fn a_socket_path_becomes_a_same_length_authority_raw_or_huffman() {
        for coded in [false, true] {
            let path = b"/tmp/tessera-agent/public/api.sock";
            let fixed = rewrite_block(&block(path, coded)).expect("rewritten");
            let mut expected = vec![0x41];
            push_integer(&mut expected, 0, 7, path.len());
            expected.extend(same_length(path.len()));
            expected.push(0x84);
            assert_eq!(fixed, expected, "huffman: {coded}");
            assert!(usable(&same_length(path.len())));
            assert_eq!(same_length(4), b"loca");
        }
    }

    #[test]
    fn valid_authorities_and_other_headers_pass_unchanged() {
        assert_eq!(rewrite_block(&block(b"localhost", false)), None);
        assert_eq!(rewrite_block(&block(b"example.org:443", true)), None);
        // Truncated or nonsense blocks are left for h2 to judge.
        assert_eq!(rewrite_block(&[0x41, 0x85, 0x01]), None);
        assert_eq!(
            rewrite_block(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            None
        );
    }

    #[test]
    fn frames_are_rewritten_across_reads_and_continuations() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let settings = frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]);
        let blk = block(b"/run/spire/agent.sock", true);
        let (a, b) = blk.split_at(3);
        let mut input = preface.to_vec();
        input.extend(&settings);
        // HEADERS (padded, priority, END_STREAM) + CONTINUATION carrying the block.
        let mut first = vec![2u8, 0, 0, 0, 1, 16];
        first.extend(a);
        first.extend([0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &first));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, 1, 1, b"data"));

        let mut expected = preface.to_vec();
        expected.extend(&settings);
        let mut fixed_payload = vec![0u8, 0, 0, 1, 16];
        fixed_payload.extend(rewrite_block(&blk).unwrap());
        expected.extend(frame(
            HEADERS,
            PRIORITY | END_STREAM | END_HEADERS,
            1,
            &fixed_payload,
        ));
        expected.extend(frame(0x0, 1, 1, b"data"));
        for step in [1, 2, 5, 9, 64, 4096] {
            assert_eq!(run(&input, step), expected, "fed {step} bytes at a time");
        }
    }

    #[test]
    fn a_frame_inside_a_header_block_turns_the_fix_off_without_losing_bytes() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let mut input = preface.to_vec();
        let blk = block(b"/x", false);
        input.extend(frame(HEADERS, 0, 1, &blk));
        input.extend(frame(0x0, 0, 1, b"oops"));
        let out = run(&input, 3);
        let mut expected = preface.to_vec();
        expected.extend(frame(HEADERS, 0, 1, &blk));
        expected.extend(frame(0x0, 0, 1, b"oops"));
        assert_eq!(out, expected);
    }

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// (kind, flags, stream, payload) of each frame after the preface.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        bytes = &bytes[PREFACE.len()..];
        let mut out = Vec::new();
        while bytes.len() >= 9 {
            let len =
                usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
            let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
            let end = (9 + len).min(bytes.len());
            out.push((bytes[3], bytes[4], stream, bytes[9..end].to_vec()));
            bytes = &bytes[end..];
        }
        out
    }

    /// Feeds `input` as reads of `step` bytes, as the socket wrapper does (a read only when
    /// nothing is ready), and returns the output and the most bytes held at once.
    fn run_bounded(input: &[u8], step: usize) -> (Vec<u8>, usize) {
        let mut fix = AuthorityFix::default();
        let (mut out, mut most) = (Vec::new(), 0);
        let mut buf = vec![0u8; 8192];
        for chunk in input.chunks(step) {
            fix.feed(chunk);
            most = most.max(fix.held());
            while fix.has_ready() {
                let n = fix.take(&mut buf);
                out.extend_from_slice(&buf[..n]);
            }
        }
        fix.finish();
        while fix.has_ready() {
            let n = fix.take(&mut buf);
            out.extend_from_slice(&buf[..n]);
        }
        (out, most)
    }

    #[test]
    fn a_one_mib_headers_frame_is_passed_on_not_buffered() {
        // The reviewer's attack: 1 MiB of HEADERS without END_HEADERS. h2 refuses the frame
        // from its 9-byte header (FRAME_SIZE_ERROR); the fix must not wait for its payload.
        let mut input = PREFACE.to_vec();
        let mut big = vec![0x41, 0x7f];
        big.resize(1 << 20, b'a');
        input.extend(frame(HEADERS, 0, 1, &big));
        let (out, most) = run_bounded(&input, 8192);
        assert_eq!(out, input);
        assert!(most <= 2 * 8192 + 9, "held {most} bytes");
    }

    #[test]
    fn a_continuation_flood_is_handed_to_h2_past_the_header_list_limit() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(
            HEADERS,
            PRIORITY,
            1,
            &[vec![0, 0, 0, 0, 7], vec![0x41; 1000]].concat(),
        ));
        for _ in 0..1000 {
            input.extend(frame(CONTINUATION, 0, 1, &[0x41; 1000]));
        }
        let (out, most) = run_bounded(&input, 4096);
        assert!(
            most <= MAX_BLOCK + MAX_FRAME + 2 * 4096 + 64,
            "held {most} bytes"
        );
        // Nothing lost or reordered: the same header bytes, in frames h2 accepts.
        let got = frames(&out);
        let want = frames(&input);
        let bytes =
            |f: &[(u8, u8, u32, Vec<u8>)]| f.iter().flat_map(|f| f.3.clone()).collect::<Vec<u8>>();
        assert_eq!(bytes(&got), bytes(&want));
        assert!(got
            .iter()
            .all(|f| f.3.len() <= MAX_FRAME && f.1 & END_HEADERS == 0));
        assert_eq!(got[0].0, HEADERS);
        assert!(got[1..].iter().all(|f| f.0 == CONTINUATION && f.2 == 1));
    }

    #[test]
    fn a_frame_that_breaks_the_block_is_passed_on_after_it() {
        // A CONTINUATION of another stream: h2 must see it (and refuse the connection), not
        // lose it.
        let mut input = PREFACE.to_vec();
        let blk = block(b"/x", false);
        input.extend(frame(HEADERS, 0, 1, &blk));
        input.extend(frame(CONTINUATION, END_HEADERS, 3, b"zz"));
        input.extend(frame(0x0, 0, 1, b"tail"));
        for step in [1, 7, 4096] {
            assert_eq!(
                run_bounded(&input, step).0,
                input,
                "fed {step} bytes at a time"
            );
        }
    }
}
