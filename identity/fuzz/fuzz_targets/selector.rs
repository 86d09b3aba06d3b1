//! Fuzzes selector parsing: no input may panic; a parsed selector prints back as given, splits
//! at its first `:`, rebuilds from its halves, survives serde, and a set parsed from the lines
//! of the input is sorted, deduplicated and matches itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_identity::{Selector, SelectorSet};

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };

    match Selector::parse(input) {
        Ok(s) => {
            assert_eq!(s.as_str(), input, "a selector prints back as given");
            assert_eq!(s.to_string(), input);
            assert!(!s.selector_type().is_empty() && !s.value().is_empty());
            assert!(
                !s.selector_type().contains(':'),
                "the type ends at the first ':'"
            );
            assert_eq!(format!("{}:{}", s.selector_type(), s.value()), input);
            let rebuilt = Selector::new(s.selector_type(), s.value());
            assert_eq!(
                rebuilt.as_ref().ok(),
                Some(&s),
                "halves rebuild the selector"
            );
            assert_eq!(s.cmp(&s), std::cmp::Ordering::Equal);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(
                serde_json::from_str::<Selector>(&json).ok().as_ref(),
                Some(&s)
            );
        }
        // Messages stay bounded whatever the input's size.
        Err(e) => assert!(e.to_string().len() < 1024),
    }

    // A set from the lines: what `entry create --selector a --selector b` builds.
    if let Ok(set) = SelectorSet::parse_all(input.lines()) {
        let items = set.as_slice();
        assert!(
            items.windows(2).all(|w| w[0] < w[1]),
            "sorted, no duplicates"
        );
        for line in input.lines() {
            let s = Selector::parse(line).unwrap();
            assert!(set.contains(&s));
            let one: SelectorSet = vec![s].into();
            assert!(one.is_subset_of(&set));
        }
        assert!(set.is_subset_of(&set));
        assert!(SelectorSet::new().is_subset_of(&set));
        let json = serde_json::to_string(&set).unwrap();
        let back: SelectorSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, set);
        // Removing one selector gives a strict subset, which the full set is not part of.
        if let Some((first, rest)) = items.split_first() {
            let smaller: SelectorSet = rest.to_vec().into();
            assert!(smaller.is_subset_of(&set));
            assert!(!set.is_subset_of(&smaller));
            assert!(!smaller.contains(first));
        }
    }
});
