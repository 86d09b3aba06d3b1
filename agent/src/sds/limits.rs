//! Bounds on what an SDS caller sends in one `DiscoveryRequest` (each a key of `[sds]`): how
//! many resource names, and how long each may be. The message as a whole is bounded by
//! `limits.max_request_bytes`, and open streams by the Workload API's stream limits.

/// Bounds on SDS requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdsLimits {
    /// Most resource names in one request (`sds.max_resource_names`).
    pub max_resource_names: usize,
    /// Longest resource name, bytes (`sds.max_resource_name_len`).
    pub max_resource_name_len: usize,
}

impl Default for SdsLimits {
    fn default() -> Self {
        Self {
            max_resource_names: 256,
            // The longest SPIFFE ID the standard allows.
            max_resource_name_len: 2048,
        }
    }
}

/// A request refused because it breaks a bound. Answered `ResourceExhausted`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdsLimitError {
    /// More names than `sds.max_resource_names`.
    #[error("the request names {count} resources, more than sds.max_resource_names ({max}); ask for fewer per request, or raise the limit")]
    TooManyNames {
        /// Names in the request.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A name longer than `sds.max_resource_name_len`.
    #[error("resource name {index} is {len} bytes, longer than sds.max_resource_name_len ({max}); names are SPIFFE IDs, trust domain IDs or the configured default names")]
    NameTooLong {
        /// Its position in the request.
        index: usize,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl SdsLimits {
    /// Checks a request's resource names.
    pub fn check(&self, names: &[String]) -> Result<(), SdsLimitError> {
        if names.len() > self.max_resource_names {
            return Err(SdsLimitError::TooManyNames {
                count: names.len(),
                max: self.max_resource_names,
            });
        }
        match names
            .iter()
            .enumerate()
            .find(|(_, n)| n.len() > self.max_resource_name_len)
        {
            Some((index, n)) => Err(SdsLimitError::NameTooLong {
                index,
                len: n.len(),
                max: self.max_resource_name_len,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_lengths_are_bounded_and_named() {
        let l = SdsLimits {
            max_resource_names: 2,
            max_resource_name_len: 5,
        };
        assert_eq!(l.check(&["a".into(), "bbbbb".into()]), Ok(()));
        assert_eq!(
            l.check(&["a".into(), "b".into(), "c".into()]),
            Err(SdsLimitError::TooManyNames { count: 3, max: 2 })
        );
        let err = l.check(&["a".into(), "bbbbbb".into()]).unwrap_err();
        assert_eq!(
            err,
            SdsLimitError::NameTooLong {
                index: 1,
                len: 6,
                max: 5
            }
        );
        assert!(err.to_string().contains("sds.max_resource_name_len"));
    }
}
