//! Id maps for the user namespace: subordinate ranges from `/etc/subuid` and `/etc/subgid`, and
//! the one fixed mapping `dev` uses with them. Pure: parsing and planning only.

use std::fmt;

/// One line of a uid_map: `inside outside count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

/// A subordinate id range granted to a user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubRange {
    pub start: u32,
    pub count: u32,
}

/// Ids inside the namespace: 0..65535, as every distribution image expects.
pub const INSIDE_IDS: u32 = 65536;

/// Finds the first range for `name` or `id` in the text of `/etc/subuid` or `/etc/subgid`.
pub fn parse_subid(text: &str, name: &str, id: u32) -> Option<SubRange> {
    let id = id.to_string();
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut parts = l.split(':');
            let owner = parts.next()?;
            let start = parts.next()?.trim().parse().ok()?;
            let count = parts.next()?.trim().parse().ok()?;
            (owner == name || owner == id).then_some(SubRange { start, count })
        })
        .find(|r| r.count > 0)
}

/// The mapping DESIGN.md describes: inside `id` → host `id`; the other inside ids from 0 up →
/// the subordinate range, in order, all of it (65536 ids map 0..=65536, as podman's keep-id).
/// Without a range: only `inside` → host `id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMap {
    pub ranges: Vec<IdRange>,
}

impl IdMap {
    pub fn with_subordinate(id: u32, sub: SubRange) -> Self {
        let mut ranges = Vec::new();
        if id < INSIDE_IDS {
            let below = id.min(sub.count);
            if below > 0 {
                ranges.push(IdRange {
                    inside: 0,
                    outside: sub.start,
                    count: below,
                });
            }
            ranges.push(IdRange {
                inside: id,
                outside: id,
                count: 1,
            });
            // The whole range is used, as podman's keep-id does: with 65536 subordinate ids,
            // inside 0..=65536 are mapped (the user's own id among them).
            let above = sub.count - below;
            if above > 0 {
                ranges.push(IdRange {
                    inside: id + 1,
                    outside: sub.start + below,
                    count: above,
                });
            }
        } else {
            ranges.push(IdRange {
                inside: 0,
                outside: sub.start,
                count: sub.count,
            });
            ranges.push(IdRange {
                inside: id,
                outside: id,
                count: 1,
            });
        }
        IdMap { ranges }
    }

    /// Arguments for `newuidmap PID ...`.
    pub fn args(&self) -> Vec<String> {
        self.ranges
            .iter()
            .flat_map(|r| {
                [
                    r.inside.to_string(),
                    r.outside.to_string(),
                    r.count.to_string(),
                ]
            })
            .collect()
    }

    /// Whether `inside` maps to some host id.
    #[cfg(test)]
    pub fn maps(&self, inside: u32) -> bool {
        self.ranges
            .iter()
            .any(|r| inside >= r.inside && inside - r.inside < r.count)
    }
}

impl fmt::Display for IdMap {
    /// The text for `/proc/PID/uid_map`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for r in &self.ranges {
            writeln!(f, "{} {} {}", r.inside, r.outside, r.count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_subuid() {
        let text = "# comment\nalice:100000:65536\n1500:165536:65536\nbob:0:0\n";
        assert_eq!(
            parse_subid(text, "alice", 1000),
            Some(SubRange {
                start: 100000,
                count: 65536
            })
        );
        assert_eq!(
            parse_subid(text, "carol", 1500),
            Some(SubRange {
                start: 165536,
                count: 65536
            })
        );
        assert_eq!(parse_subid(text, "bob", 7), None);
        assert_eq!(parse_subid("garbage\n::\n", "x", 1), None);
    }

    #[test]
    fn design_example_mapping() {
        let m = IdMap::with_subordinate(
            1500,
            SubRange {
                start: 165536,
                count: 65536,
            },
        );
        // DESIGN.md's example stops at inside 65535 and leaves the range's last id unused;
        // podman's keep-id maps it too (inside 65536), and so does dev.
        assert_eq!(
            m.args().join(" "),
            "0 165536 1500 1500 1500 1 1501 167036 64036"
        );
        assert!(m.maps(0) && m.maps(65535) && m.maps(65536) && !m.maps(65537));
    }

    #[test]
    fn large_uid_and_small_range() {
        let m = IdMap::with_subordinate(
            100000,
            SubRange {
                start: 200000,
                count: 65536,
            },
        );
        assert_eq!(m.args().join(" "), "0 200000 65536 100000 100000 1");
        let m = IdMap::with_subordinate(
            1000,
            SubRange {
                start: 200000,
                count: 500,
            },
        );
        assert_eq!(m.args().join(" "), "0 200000 500 1000 1000 1");
    }
}
