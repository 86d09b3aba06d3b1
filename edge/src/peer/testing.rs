//! Test support (feature `test-support`): a raw HTTP/2 client for Unix-socket gRPC servers
//! that sends what grpc-go sends (`grpcurl -plaintext -unix`): the socket's path as
//! `:authority`, which no `http::Uri`-based client can express. Also the hostile clients of
//! the socket tests: half-sent header blocks, CONTINUATION floods, oversized frames.
//!
//! Every read is bounded by [`WAIT`]. Header blocks are written as HPACK literals without
//! indexing or Huffman coding; responses are read frame by frame, their headers not decoded
//! (the gRPC messages are in DATA frames).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest wait for any read.
pub const WAIT: Duration = Duration::from_secs(5);

/// The HTTP/2 client preface.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Frame types used here.
pub const DATA: u8 = 0x0;
/// HEADERS.
pub const HEADERS: u8 = 0x1;
/// SETTINGS.
pub const SETTINGS: u8 = 0x4;
/// GOAWAY.
pub const GOAWAY: u8 = 0x7;
/// CONTINUATION.
pub const CONTINUATION: u8 = 0x9;
/// END_STREAM.
pub const END_STREAM: u8 = 0x1;
/// END_HEADERS.
pub const END_HEADERS: u8 = 0x4;

/// One frame as bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    // Literal without indexing, new name (RFC 7541 §6.2.2), raw strings.
    out.push(0x00);
    integer(out, name.len());
    out.extend(name.as_bytes());
    integer(out, value.len());
    out.extend(value.as_bytes());
}

fn integer(out: &mut Vec<u8>, mut value: usize) {
    if value < 127 {
        out.push(value as u8);
        return;
    }
    out.push(127);
    value -= 127;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// The header block of a gRPC call to `method` (`/pkg.Service/Method`) with `authority`.
pub fn grpc_headers(authority: &str, method: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", method),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        literal(&mut b, name, value);
    }
    b
}

/// A gRPC message: the 5-byte prefix and `message`.
pub fn grpc_message(message: &[u8]) -> Vec<u8> {
    let mut out = vec![0];
    out.extend((message.len() as u32).to_be_bytes());
    out.extend(message);
    out
}

/// A connection that has sent the preface and an empty SETTINGS frame (or tried to: a server
/// that closes at accept makes the writes fail, which the reads then show).
pub async fn connect(path: &Path) -> UnixStream {
    let mut s = UnixStream::connect(path).await.unwrap();
    let _ = s.write_all(PREFACE).await;
    let _ = s.write_all(&frame(SETTINGS, 0, 0, &[])).await;
    s
}

/// The frames the server sent until it closed the connection or went quiet for [`WAIT`]:
/// (kind, flags, stream, payload), and whether the connection ended (EOF or reset).
pub async fn read_frames(s: &mut UnixStream) -> (Vec<(u8, u8, u32, Vec<u8>)>, bool) {
    read_frames_until(s, |_| false).await
}

/// Like [`read_frames`], stopping early after a frame for which `done` is true.
pub async fn read_frames_until(
    s: &mut UnixStream,
    mut done: impl FnMut(&(u8, u8, u32, Vec<u8>)) -> bool,
) -> (Vec<(u8, u8, u32, Vec<u8>)>, bool) {
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        match tokio::time::timeout(WAIT, s.read_exact(&mut head)).await {
            Err(_) => return (frames, false),
            Ok(Err(_)) => return (frames, true),
            Ok(Ok(_)) => {}
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        match tokio::time::timeout(WAIT, s.read_exact(&mut payload)).await {
            Err(_) => return (frames, false),
            Ok(Err(_)) => return (frames, true),
            Ok(Ok(_)) => {}
        }
        let f = (
            head[3],
            head[4],
            u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        );
        if f.0 == SETTINGS && f.1 & 0x1 == 0 {
            // Acknowledge the server's settings, as every client must.
            let _ = s.write_all(&frame(SETTINGS, 0x1, 0, &[])).await;
        }
        let stop = done(&f);
        frames.push(f);
        if stop {
            return (frames, false);
        }
    }
}

/// Makes one unary gRPC call the way grpc-go does over a Unix socket (`:authority` = the
/// socket's path) and returns the response message, or what went wrong.
pub async fn unary_with_socket_authority(
    path: &Path,
    method: &str,
    request: &[u8],
    extra_headers: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    let authority = path.display().to_string();
    let mut s = connect(path).await;
    let block = grpc_headers(&authority, method, extra_headers);
    s.write_all(&frame(HEADERS, END_HEADERS, 1, &block))
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(&frame(DATA, END_STREAM, 1, &grpc_message(request)))
        .await
        .map_err(|e| e.to_string())?;
    let (frames, _) = read_frames_until(&mut s, |f| {
        f.2 == 1 && f.1 & END_STREAM != 0 || f.0 == GOAWAY || f.0 == 0x3
    })
    .await;
    let data: Vec<u8> = frames
        .iter()
        .filter(|f| f.0 == DATA && f.2 == 1)
        .flat_map(|f| f.3.clone())
        .collect();
    if data.len() < 5 {
        let kinds: Vec<u8> = frames.iter().map(|f| f.0).collect();
        return Err(format!("no response message; frames {kinds:?}"));
    }
    let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    data.get(5..5 + len)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "truncated response message".to_owned())
}

/// The GOAWAY error code among `frames`, if the server sent one.
pub fn goaway_code(frames: &[(u8, u8, u32, Vec<u8>)]) -> Option<u32> {
    frames
        .iter()
        .find(|f| f.0 == GOAWAY && f.3.len() >= 8)
        .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
}

/// The names listed by a gRPC reflection v1 `ListServices` response (field 6, each a
/// `ServiceResponse` whose field 1 is the name), decoded by hand to need no generated code.
pub fn listed_services(response: &[u8]) -> Vec<String> {
    fn fields(mut b: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        let varint = |b: &mut &[u8]| -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let (&x, rest) = b.split_first()?;
                *b = rest;
                v |= u64::from(x & 0x7f) << shift;
                if x & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        };
        while let Some(key) = varint(&mut b) {
            match key & 7 {
                0 => {
                    if varint(&mut b).is_none() {
                        break;
                    }
                }
                2 => {
                    let Some(len) = varint(&mut b) else { break };
                    let Some(v) = b.get(..len as usize) else {
                        break;
                    };
                    out.push((key >> 3, v.to_vec()));
                    b = &b[len as usize..];
                }
                _ => break,
            }
        }
        out
    }
    fields(response)
        .into_iter()
        .filter(|(n, _)| *n == 6)
        .flat_map(|(_, list)| fields(&list))
        .filter(|(n, _)| *n == 1)
        .flat_map(|(_, service)| fields(&service))
        .filter(|(n, _)| *n == 1)
        .map(|(_, name)| String::from_utf8_lossy(&name).into_owned())
        .collect()
}

/// The reflection v1 `ListServices` request (field 7, `list_services = ""`).
pub const LIST_SERVICES: &[u8] = &[0x3a, 0x00];
/// The reflection v1 method.
pub const REFLECTION_V1: &str = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
/// The gRPC health check method (an empty request asks about the whole server).
pub const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
