//! What `/proc/<pid>/stat` says about a peer process: its state and its start time, which
//! tells one process from a later one that was given the same pid.

use std::io::Read;

/// What is read from `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Field 22: start time, clock ticks after boot.
    pub start_time: u64,
}

impl ProcStat {
    /// Parses `pid (comm) state ... starttime ...`. The command name may hold spaces and
    /// parentheses (a process may name itself `a) b`), so fields are counted from the last
    /// `)`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let close = text.rfind(')').ok_or("no \")\" after the command name")?;
        // text[close] is ')', one byte: the slice starts on a character boundary.
        let mut fields = text[close + 1..].split_ascii_whitespace();
        let state = fields
            .next()
            .and_then(|s| s.chars().next())
            .ok_or("no state field")?;
        // Fields 4 to 21 come between the state (3) and the start time (22).
        let start = fields.nth(22 - 4).ok_or("fewer than 22 fields")?;
        let start_time = start
            .parse()
            .map_err(|_| format!("start time {start:?} is not a number"))?;
        Ok(Self { state, start_time })
    }

    /// Whether the process has exited (a zombie not yet reaped, or dead).
    pub fn exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// The start time of live process `pid` from `/proc`, or `None` when it cannot be read (no
/// `/proc`, the process is gone or a zombie, an unreadable entry).
pub fn start_time(pid: u32) -> Option<u64> {
    let file = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut text = String::new();
    // A few hundred bytes; bounded anyway.
    file.take(64 * 1024).read_to_string(&mut text).ok()?;
    let stat = ProcStat::parse(&text).ok()?;
    (!stat.exited()).then_some(stat.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_start_time_and_a_missing_one_none() {
        assert!(start_time(std::process::id()).is_some());
        // Above the kernel's pid_max (at most 2^22).
        assert_eq!(start_time(u32::MAX), None);
    }
}
