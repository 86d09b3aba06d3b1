//! Limits that both processes enforce on the same values, defined once so that they cannot
//! drift apart: a JWT-SVID request a workload may make of its agent is one the agent may make
//! of the server. Each process reads them from its own `[limits]` table (same key names, same
//! defaults, from here) and refuses with [`AudienceError`], which names the key.

/// Default of `limits.max_audiences`: audiences in one JWT-SVID request.
pub const DEFAULT_MAX_AUDIENCES: usize = 32;

/// Default of `limits.max_audience_len`: bytes of one audience.
pub const DEFAULT_MAX_AUDIENCE_LEN: usize = 1024;

/// Bounds on the audiences of one JWT-SVID request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudienceLimits {
    /// `limits.max_audiences`.
    pub max_audiences: usize,
    /// `limits.max_audience_len`.
    pub max_audience_len: usize,
}

impl Default for AudienceLimits {
    fn default() -> Self {
        Self {
            max_audiences: DEFAULT_MAX_AUDIENCES,
            max_audience_len: DEFAULT_MAX_AUDIENCE_LEN,
        }
    }
}

/// Why the audiences of a JWT-SVID request are refused (`InvalidArgument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudienceError {
    /// No audience at all.
    #[error("audience is required: a JWT-SVID names at least one audience")]
    Missing,
    /// More audiences than `limits.max_audiences`.
    #[error("{got} audiences, over the limit of {max} (limits.max_audiences); ask for fewer per JWT-SVID")]
    TooMany {
        /// How many were given.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// An empty audience.
    #[error("audience {index} is empty; every audience must be a non-empty string")]
    Empty {
        /// Its position.
        index: usize,
    },
    /// An audience longer than `limits.max_audience_len`.
    #[error("audience {index} is {len} bytes, over the limit of {max} (limits.max_audience_len)")]
    TooLong {
        /// Its position.
        index: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl AudienceLimits {
    /// Checks `audiences` against the limits.
    pub fn check<S: AsRef<str>>(&self, audiences: &[S]) -> Result<(), AudienceError> {
        if audiences.is_empty() {
            return Err(AudienceError::Missing);
        }
        if audiences.len() > self.max_audiences {
            return Err(AudienceError::TooMany {
                got: audiences.len(),
                max: self.max_audiences,
            });
        }
        for (index, a) in audiences.iter().enumerate() {
            let len = a.as_ref().len();
            if len == 0 {
                return Err(AudienceError::Empty { index });
            }
            if len > self.max_audience_len {
                return Err(AudienceError::TooLong {
                    index,
                    len,
                    max: self.max_audience_len,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_allow_32_audiences_of_1024_bytes_and_name_the_keys_beyond() {
        let l = AudienceLimits::default();
        let full: Vec<String> = (0..32).map(|i| format!("{i:0>1024}")).collect();
        l.check(&full).unwrap();
        let mut over = full.clone();
        over.push("x".into());
        let err = l.check(&over).unwrap_err();
        assert_eq!(err, AudienceError::TooMany { got: 33, max: 32 });
        assert!(err.to_string().contains("limits.max_audiences"), "{err}");
        let err = l.check(&["a".to_owned(), "b".repeat(1025)]).unwrap_err();
        assert_eq!(
            err,
            AudienceError::TooLong {
                index: 1,
                len: 1025,
                max: 1024
            }
        );
        assert!(err.to_string().contains("limits.max_audience_len"), "{err}");
        assert_eq!(l.check::<&str>(&[]).unwrap_err(), AudienceError::Missing);
        assert_eq!(
            l.check(&["a", ""]).unwrap_err(),
            AudienceError::Empty { index: 1 }
        );
    }
}
